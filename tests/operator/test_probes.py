"""The liveness probe reports the reconcile loops, and fails when they stall."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import httpx
import pytest

from aigw_operator.base.settings import Settings
from aigw_operator.engine.workqueue import WorkQueue
from aigw_operator.runtime.controller import Controller
from aigw_operator.runtime.operator import run
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.operator.conftest import KubeEnv, make_settings


async def test_liveness_passes_while_nothing_is_due_however_long() -> None:
    """Terminal, deleting or long-resync objects are not due: a quiet operator is healthy."""
    runtime = Controller(Settings(liveness_stall_seconds=0.2))
    runtime.queues["GatewayEndpoint"] = queue = WorkQueue("GatewayEndpoint", _quick_step, workers=1)
    queue.start()
    try:
        runtime.poke("GatewayEndpoint", {"metadata": {"uid": "uid-1", "name": "a", "namespace": "default"}}, None)
        queue.schedule("uid-1", 3600.0)  # its next resync is an hour away
        runtime.progress_at -= 10_000  # no step finished for hours: that alone is not a stall
        await asyncio.sleep(0.4)
        assert runtime.liveness()["objects"] == 1
    finally:
        await queue.stop(timeout=1)


async def test_liveness_fails_when_a_step_hangs() -> None:
    release = asyncio.Event()

    async def hanging_step(key: str) -> float | None:
        await release.wait()
        return None

    runtime = Controller(Settings(liveness_stall_seconds=0.3))
    runtime.queues["GatewayEndpoint"] = queue = WorkQueue("GatewayEndpoint", hanging_step, workers=1)
    queue.start()
    try:
        queue.schedule("uid-1", 0.0)
        await asyncio.sleep(0.05)
        runtime.liveness()  # running, but not for long yet
        await asyncio.sleep(0.4)
        with pytest.raises(RuntimeError, match="still waiting or running"):
            runtime.liveness()
        # Work queued behind the hung step counts too: it is due and nobody takes it.
        queue.schedule("uid-2", 0.0)
        release.set()
        await asyncio.sleep(0.05)
        assert runtime.liveness()["longest_stall_seconds"] < 0.3
    finally:
        release.set()
        await queue.stop(timeout=1)


async def test_liveness_fails_when_due_work_waits_for_a_busy_pool() -> None:
    release = asyncio.Event()

    async def step(key: str) -> float | None:
        if key == "busy":
            await release.wait()
        return None

    runtime = Controller(Settings(liveness_stall_seconds=0.3))
    runtime.queues["Model"] = queue = WorkQueue("Model", step, workers=1)
    queue.start()
    try:
        queue.schedule("busy", 0.0)
        await asyncio.sleep(0.02)
        queue.schedule("waiting", 0.0)  # due now, but the only worker is held
        await asyncio.sleep(0.45)
        with pytest.raises(RuntimeError):
            runtime.liveness()
    finally:
        release.set()
        await queue.stop(timeout=1)


async def _quick_step(key: str) -> float | None:
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_endpoint_serves_the_probe(kube_env: KubeEnv, baseten: BasetenSimulator) -> None:
    port = free_port()
    settings = make_settings(kube_env, baseten.url)
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
