"""The README's first command: the demo converges every example and exits 0; with --keep-running it
stays up for kubectl, and Ctrl-C stops it with one line."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KEYS = ("demo-baseten-key", "demo-ngrok-key", "sk-demo-not-a-real-key", "demo-together-key", "demo-registry-key")


def run_demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "aigw_testbed.cli", "demo", "--timeout", "60"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_demo_converges_every_example() -> None:
    result = run_demo(REPO)
    assert "All 5 resources are Ready." in result.stdout
    for key in KEYS:
        assert key not in result.stdout + result.stderr
    assert "Starting" in result.stdout, "the table shows the endpoint starting up"


def example_resources() -> list[tuple[str, str]]:
    """(kind, name) of every aigw.dev resource in examples/, as the demo applies them."""
    found = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("aigw.dev/"):
                found.append((doc["kind"], doc["metadata"]["name"]))
    return found


@dataclass
class Demo:
    """``aigw-testbed demo --keep-running`` in its own session, as a terminal would run it."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line (already read or yet to come) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for line in self.lines[checked:]:
                if match := re.search(pattern, line):
                    return match
            checked = len(self.lines)
            if not self._pull(deadline - time.monotonic()):
                raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def settle(self, quiet: float = 1.0, timeout: float = 20.0) -> None:
        """Read until nothing new is printed for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._pull(min(quiet, deadline - time.monotonic())):
            pass

    def _pull(self, timeout: float) -> bool:
        try:
            line = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if line is None:
            self._queue.put(None)  # stay at end of output for later callers
            time.sleep(min(max(timeout, 0), 0.1))
            return False
        self.lines.append(line)
        return True

    def kubectl_commands(self) -> list[list[str]]:
        commands = []
        for line in self.lines:
            if line.startswith("  kubectl "):
                commands.append(shlex.split(line.split("#", 1)[0]))
        return commands


@pytest.fixture(scope="module")
def kept_demo() -> Iterator[Demo]:
    process = subprocess.Popen(
        [sys.executable, "-m", "aigw_testbed.cli", "demo", "--keep-running", "--timeout", "60"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own session and process group: the Ctrl-C test signals the whole group, as a terminal does.
        start_new_session=True,
    )
    demo = Demo(process)
    try:
        demo.wait_for(r"Everything keeps running", timeout=90)
        demo.settle()
        yield demo
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def kubectl(command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    # kubectl caches discovery under $HOME/.kube; keep that out of the user's home.
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"HOME": str(home)}
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env=env)


def test_keep_running_prints_kubectl_commands_that_work_against_the_emulator(kept_demo: Demo, tmp_path: Path) -> None:
    match = kept_demo.wait_for(r"The emulator's kubeconfig is (\S+) \(namespace demo\)", timeout=1)
    kubeconfig = Path(match.group(1))
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")

    commands = kept_demo.kubectl_commands()
    verbs = [c[3] for c in commands]
    assert commands and all(c[:3] == ["kubectl", "--kubeconfig", str(kubeconfig)] for c in commands)
    assert ["get", "aigw", "-A"] in [c[3:] for c in commands]
    assert {"get", "describe", "delete"} <= set(verbs)

    for command in (c for c in commands if c[3] != "delete"):
        result = kubectl(command, tmp_path)
        assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}{result.stderr}"
        assert "error" not in result.stderr.lower(), result.stderr
        if command[3:] == ["get", "aigw", "-A"]:
            for kind, name in example_resources():
                assert re.search(rf"{kind.lower()}\.aigw\.dev/{re.escape(name)}\b", result.stdout), result.stdout
        elif command[3] == "describe":
            name = command[5]
            assert re.search(rf"^Name:\s+{re.escape(name)}$", result.stdout, re.M), result.stdout
            assert re.search(r"Reason:\s+Available", result.stdout), "describe shows the Ready condition"
        elif "-o" in command:
            obj: dict[str, Any] = yaml.safe_load(result.stdout)
            ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True", obj["status"]
        elif command[3:] == ["get", "events"]:
            assert len(result.stdout.strip().splitlines()) > 1, "the operator's Events are listed"


def test_keep_running_table_follows_a_kubectl_delete(kept_demo: Demo, tmp_path: Path) -> None:
    delete = next(c for c in kept_demo.kubectl_commands() if c[3] == "delete")
    kind, name = delete[4], delete[5]
    result = kubectl(delete, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # NotFound only once the operator has deleted the upstream object and dropped its finalizer.
    kept_demo.wait_for(rf"(?i)^{kind}\s+{re.escape(name)}\s+-\s+NotFound", timeout=30)
    assert kept_demo.process.poll() is None, "the demo keeps running"


def test_ctrl_c_stops_demo_and_operator_with_one_line(kept_demo: Demo) -> None:
    operator_pid = int(kept_demo.wait_for(r"operator:\s+pid (\d+)", timeout=1).group(1))
    kubeconfig = Path(kept_demo.wait_for(r"The emulator's kubeconfig is (\S+) ", timeout=1).group(1))
    kept_demo.settle()
    before = len(kept_demo.lines)

    started = time.monotonic()
    os.killpg(kept_demo.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code = kept_demo.process.wait(timeout=30)
    elapsed = time.monotonic() - started
    kept_demo.settle(quiet=0.5, timeout=5)

    after = kept_demo.lines[before:]
    assert code == 130, "\n".join(after)
    assert len(after) == 1 and len(after[0]) < 100, after
    assert "stopped" in after[0]
    assert elapsed < 20
    assert not any("Traceback" in line for line in kept_demo.lines)
    assert not kubeconfig.exists(), "the temporary kubeconfig goes with the emulator"
    with pytest.raises(ProcessLookupError):
        os.kill(operator_pid, 0)  # the operator process is gone too
    for key in KEYS:
        assert not any(key in line for line in kept_demo.lines)


def test_testbed_command_describes_the_demo_and_refuses_a_kubeconfig_without_keep_running() -> None:
    testbed = str(Path(sys.executable).with_name("aigw-testbed"))
    help_text = subprocess.run([testbed, "demo", "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert help_text.returncode == 0 and "usage: aigw-testbed demo" in help_text.stdout, help_text.stderr
    assert "--keep-running" in help_text.stdout
    refused = subprocess.run(
        [testbed, "demo", "--kubeconfig", "/tmp/never-written"], capture_output=True, text=True, timeout=30, check=False
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == "aigw-testbed demo: --kubeconfig needs --keep-running"
    assert not Path("/tmp/never-written").exists()


def test_demo_from_another_directory_uses_the_packaged_examples(tmp_path: Path) -> None:
    """The demo needs no checkout as its working directory: examples and specs are package data."""
    result = run_demo(tmp_path)
    applied = set(re.findall(r"^applied (\w+)/", result.stdout, re.M))
    assert {"GatewayEndpoint", "Provider", "Model", "DedicatedEndpoint"} <= applied, result.stdout
