"""The ``aigw-operator`` command line: help text, ``run`` without a cluster, ``run`` stopped by Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aigw_operator.cli import missing_kube_api
from aigw_operator.crds import all_crds
from aigw_testbed.emulator.server import KubeEmulator, KubeEmulatorServer
from aigw_testbed.kubectl import Kube

# The installed console script, as a user runs it (the entry point in pyproject.toml).
AIGW_OPERATOR = str(Path(sys.executable).with_name("aigw-operator"))
SOURCES = ("in-cluster service account", "$KUBECONFIG", "~/.kube/config", "AIGW_KUBE_API_URL")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without any way to a Kubernetes API, and an empty home directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIGW_", "KUBERNETES_")) and k not in ("KUBECONFIG", "HOME")
    }
    return env | {"HOME": str(home)} | extra


def test_help_describes_every_command_and_where_settings_come_from() -> None:
    result = subprocess.run([AIGW_OPERATOR, "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # The old help was the module docstring verbatim: "``aigw-operator run | demo | crds | drain``."
    assert "``" not in text and " | " not in text, text
    for command in ("run", "crds", "drain"):
        assert re.search(rf"^\s+{command}\s+\S.{{10,}}", text, re.M), f"{command} has no description:\n{text}"
    assert "AIGW_" in text and "README" in text, "says where settings come from"
    for command in ("run", "crds", "drain"):
        sub = subprocess.run(
            [AIGW_OPERATOR, command, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        assert sub.returncode == 0 and f"usage: aigw-operator {command}" in sub.stdout, sub.stdout + sub.stderr
    # The demo is the testbed's (aigw-testbed demo): the operator's command does not offer it.
    assert not re.search(r"^\s+demo\s", text, re.M), text


def test_run_without_any_cluster_exits_at_once_naming_every_source(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [AIGW_OPERATOR, "run"],
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,  # kopf's own login would retry every 60 s for ever
        check=False,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip()
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    for source in SOURCES:
        assert source in output, output
    assert str(tmp_path / ".kube" / "config") in output, "names the file it looked for"


def test_run_with_kubeconfig_naming_a_missing_file_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = subprocess.run(
        [AIGW_OPERATOR, "run"],
        env=clean_env(tmp_path, KUBECONFIG=str(missing)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1 and len(output.splitlines()) == 1, output
    assert f"$KUBECONFIG ({missing}: not found)" in output
    for source in SOURCES:
        assert source in output, output


def test_kube_api_sources_as_kopf_would_use_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    home_config = tmp_path / "home" / ".kube" / "config"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where ~/.kube/config is looked for

    def check(environ: dict[str, str], kube_api_url: str | None = None) -> str | None:
        return missing_kube_api(environ, kube_api_url=kube_api_url, token=token)

    assert check({}, kube_api_url="http://127.0.0.1:1") is None
    assert check({"KUBECONFIG": str(kubeconfig)}) is None
    assert check({"KUBECONFIG": f"{kubeconfig}{os.pathsep}{kubeconfig}"}) is None
    # kopf opens every file in the list; one missing would fail its login on every retry.
    partly = check({"KUBECONFIG": f"{kubeconfig}{os.pathsep}{tmp_path / 'gone'}"})
    assert partly is not None and str(tmp_path / "gone") in partly and str(kubeconfig) not in partly
    # In a pod: the service host variable and the mounted token, both.
    assert check({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is not None
    token.write_text("t0ken")
    assert check({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    assert check({}) is not None
    home_config.parent.mkdir(parents=True)
    home_config.write_text("apiVersion: v1\nkind: Config\n")
    assert check({}) is None


async def test_run_stops_cleanly_and_silently_on_ctrl_c(tmp_path: Path) -> None:
    """As the demo's operator process, and as anyone's `aigw-operator run` in a terminal."""
    emulator = KubeEmulator()
    async with KubeEmulatorServer(emulator) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for crd in all_crds():
            await Kube(http, namespace="default").apply_crd(crd)
        process = await asyncio.create_subprocess_exec(
            AIGW_OPERATOR,
            "run",
            env=clean_env(tmp_path, AIGW_KUBE_API_URL=server.url, AIGW_LOG_LEVEL="WARNING", AIGW_METRICS_PORT="0"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            # Watching means kopf is up (its signal handlers are installed before the watches start).
            deadline = time.monotonic() + 60
            while emulator.open_watches == 0:
                assert process.returncode is None, await process.stdout.read() if process.stdout else b""
                assert time.monotonic() < deadline, "the operator never started watching"
                await asyncio.sleep(0.1)
            process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.stdout is not None
        output = (await process.stdout.read()).decode()
    assert code == 0, output
    assert output == "", "nothing at WARNING level: no traceback, no error"
