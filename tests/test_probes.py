"""The liveness probe reports the reconcile loops, and fails when they stall."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import httpx
import pytest

from aigw_operator.operator import Runtime, run
from aigw_operator.settings import Settings
from aigw_operator.simulators.baseten import BasetenSimulator
from tests.conftest import KubeEnv, make_settings


def test_liveness_fails_when_no_loop_moves() -> None:
    runtime = Runtime(Settings(resync_interval=10, resync_jitter=0))
    assert runtime.liveness()["objects"] == 0
    runtime.poke("GatewayEndpoint", {"metadata": {"uid": "uid-1", "name": "a", "namespace": "default"}}, None)
    runtime.progress_at -= 79  # 2 resyncs + 60 s margin = 80 s
    assert runtime.liveness()["objects"] == 1
    runtime.progress_at -= 2
    with pytest.raises(RuntimeError, match="no reconcile finished"):
        runtime.liveness()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_endpoint_serves_the_probe(kube_env: KubeEnv, baseten: BasetenSimulator) -> None:
    port = free_port()
    settings = make_settings(kube_env.url, baseten.url)
    stop, ready = threading.Event(), threading.Event()

    def main() -> None:
        # kopf ends its own task as cancelled when asked to stop.
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(
                run(settings, stop_flag=stop, ready_flag=ready, liveness_endpoint=f"http://127.0.0.1:{port}/healthz")
            )

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(ready.wait, 15)
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
        assert response.status_code == 200
        assert response.json()["reconcile"]["objects"] == 0
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
