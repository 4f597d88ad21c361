"""The README's first command: the demo converges every example and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_converges_every_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aigw_operator.cli", "demo", "--timeout", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "All 5 resources are Ready." in result.stdout
    assert "demo-baseten-key" not in result.stdout + result.stderr
    assert "demo-ngrok-key" not in result.stdout + result.stderr
    assert "sk-demo-not-a-real-key" not in result.stdout + result.stderr
    assert "demo-together-key" not in result.stdout + result.stderr
    assert "Starting" in result.stdout, "the table shows the endpoint starting up"
