"""A real crash: the operator as its own process, SIGKILLed between the upstream POST and the
status write, then started again as a new process.

Elsewhere in the suite a "kill" stops the in-process operator's event loop. Here the operator is
``python -m aigw_operator.cli run`` (what the ``aigw-operator run`` console script runs), talking
over loopback HTTP to the Kubernetes API emulator and the simulators that live in the test's own
process, as in ``aigw-testbed demo``. The simulator carries the create out and holds its answer;
the test SIGKILLs the process while it waits. Whatever the process had in memory is gone, the
kernel closes its sockets, and only what it wrote to Kubernetes before the POST survives. The new
process must find the object (by its natural key, or for Together by the create-pending mark and a
search) and adopt it: one upstream object, one POST, then a clean delete.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from tests.conftest import CANARIES, REPO
from tests.operator.conftest import KubeEnv, make_settings
from tests.operator.test_dedicated_endpoint import spec as dedicated_endpoint_spec
from tests.operator.test_gateway_endpoint import spec as gateway_endpoint_spec
from tests.operator.test_model import spec as model_spec
from tests.operator.test_provider import spec as provider_spec

FINALIZER = "aigw.dev/finalizer"
CREATE_PENDING = "aigw.dev/create-pending"
#: From spawning the process to its POST: the interpreter's imports (about 1 s), kopf's start-up,
#: the finalizer, the lookup before the create.
FIRST_POST_SECONDS = 20.0
STOP_SECONDS = 10.0


# ------------------------------------------------------------------------------------ the process


def settings_env(settings: Any) -> dict[str, str]:
    """``settings`` as the ``AIGW_*`` environment that makes ``aigw-operator run`` read it back."""

    def value(v: Any) -> str:
        if v is None:
            return "null"  # Settings' env_parse_none_str
        if isinstance(v, (list, dict, bool)):
            return json.dumps(v)
        return str(v)

    env: dict[str, str] = {}
    for key, v in settings.model_dump(mode="json").items():
        name = f"AIGW_{key.upper()}"
        if isinstance(v, dict):
            env.update({f"{name}__{sub.upper()}": value(sv) for sub, sv in v.items()})
        else:
            env[name] = value(v)
    return env


# Looked up here, in the parent: between fork and exec the child only calls it.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The kernel SIGKILLs the operator if the test process dies first (even by SIGKILL), so not
    # even a crashed test run can leave an operator behind.
    assert _prctl is not None
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class OperatorProcess:
    """One run of ``aigw-operator run`` in its own process, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, args: Sequence[str] = ()) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aigw_operator.cli", "run", *args],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C on the test run reaches pytest only, whose teardown
            # then stops it, never an operator half-way through its imports.
            process_group=0,
            # Safe here: the child only calls a libc function looked up before the fork.
            preexec_fn=_die_with_parent if _prctl is not None else None,  # noqa: PLW1509
        )
        self.pid = self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        assert self.alive, f"operator pid {self.pid} exited with {self.proc.returncode}:\n{self.output()}"

    def sigkill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    async def wait(self, timeout: float = STOP_SECONDS) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"operator pid {self.pid} still running after {timeout}s"
            await asyncio.sleep(0.01)
        self._out.close()
        return self.proc.returncode

    async def stop(self) -> int:
        """SIGTERM (the operator's clean shutdown), SIGKILL if it is not gone in time."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return await self.wait()
            except AssertionError:
                self.sigkill()
        return await self.wait()

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]


class Operators:
    """Starts operator processes for one test; every one still running is killed at teardown."""

    def __init__(self, kube_env: KubeEnv, sims: dict[str, SimulatorServer], logs: Path) -> None:
        settings = make_settings(
            kube_env,
            sims["baseten"].url,
            sims["ngrok"].url,
            sims["registry"].url,
            sims["together"].url,
            metrics_port=None,
        )
        # The inherited environment without any AIGW_* of the caller's (KUBECONFIG stays: against
        # a real cluster, settings.kube_api_url is None and the operator finds the cluster with it).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
        self.env = {**inherited, **settings_env(settings), "AIGW_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.logs = logs
        self.started: list[OperatorProcess] = []

    def start(self, env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> OperatorProcess:
        """``env``: variables to set on top of the test's; ``args``: more options of ``run``."""
        environ = {**self.env, **(env or {})}
        process = OperatorProcess(environ, self.logs / f"operator-{len(self.started) + 1}.log", args)
        self.started.append(process)
        return process

    async def close(self) -> None:
        for process in self.started:
            if process.alive:
                process.sigkill()
            await process.wait()
        assert not [p.pid for p in self.started if p.alive]

    def leaked_keys(self) -> list[str]:
        """Keys in any line the operator processes logged (the suite's canary check, for them)."""
        text = "".join(p.log.read_text(errors="replace") for p in self.started)
        return [c[:6] for c in CANARIES if c in text]


@pytest.fixture
async def operators(
    kube_env: KubeEnv, simulators: dict[str, SimulatorServer], tmp_path: Path
) -> AsyncIterator[Operators]:
    # Torn down before kube_env: no operator is left to put a finalizer back while it strips them.
    ops = Operators(kube_env, simulators, tmp_path)
    try:
        yield ops
    finally:
        await ops.close()


# ------------------------------------------------------------------------------------ the kinds


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    name: str
    sim: str
    create_route: str
    spec: Callable[[], dict[str, Any]]
    # The ids of the upstream objects that are this resource's (by its natural key, or all).
    objects: Callable[[Any], list[str]]


KINDS = [
    Kind(
        "GatewayEndpoint",
        "gatewayendpoints",
        "glm",
        "baseten",
        "/v1/gateway/endpoints",
        gateway_endpoint_spec,
        lambda sim: [e["id"] for e in sim.endpoints.values() if e["slug"] == "my-org/glm"],
    ),
    Kind(
        "Provider",
        "providers",
        "vllm",
        "ngrok",
        "/providers",
        provider_spec,
        lambda sim: [p["id"] for p in sim.providers.values() if p["providerId"] == "internal-vllm"],
    ),
    Kind(
        "Model",
        "models",
        "assistant",
        "registry",
        "/api/v1/models/",
        model_spec,
        lambda sim: [m["id"] for m in sim.models("root").values() if m["name"] == "assistant"],
    ),
    Kind(
        "DedicatedEndpoint",
        "dedicatedendpoints",
        "llama",
        "together",
        "/v1/endpoints",
        dedicated_endpoint_spec,
        lambda sim: list(sim.endpoints),  # display names are not unique: every endpoint counts
    ),
]


def _log(sim: SimulatorServer) -> str:
    start = sim.requests[0].time if sim.requests else 0.0
    return ", ".join(f"+{r.time - start:.2f}s {r.method} {r.path} -> {r.status}" for r in sim.requests)


@pytest.mark.parametrize("k", KINDS, ids=[k.kind for k in KINDS])
async def test_sigkill_between_post_and_status_write_then_restart_adopts(
    k: Kind,
    kube_env: KubeEnv,
    simulators: dict[str, SimulatorServer],
    credentials: str,
    operators: Operators,
) -> None:
    kube, sim = kube_env.kube, simulators[k.sim]
    started = time.monotonic()

    # 1. The first operator process creates; the upstream carries the POST out and holds its answer.
    hold = sim.faults.hold_next_response("POST")
    first = operators.start()
    try:
        response = await kube.create(k.kind, k.plural, k.name, k.spec())
        assert response.status_code == 201, response.text
        try:
            await asyncio.wait_for(hold.reached.wait(), FIRST_POST_SECONDS)
        except TimeoutError:
            first.check_alive()
            raise AssertionError(f"the operator never sent the POST; upstream saw: {_log(sim)}") from None
        reached_at = time.monotonic()
        # 2. SIGKILL while it waits for the answer: after the upstream's effect, before it can know.
        first.sigkill()
        killed_at = time.monotonic()
        code = await first.wait()
    finally:
        hold.release()  # the answer goes to a socket the kernel has closed
    assert code == -signal.SIGKILL, f"the operator ended with {code}, not by the SIGKILL"

    # 3. The kill landed in the window: one POST and nothing after it, no id in the status.
    assert hold.record is not None
    assert sim.requests[sim.requests.index(hold.record) :] == [hold.record], (
        f"the operator acted on the held POST before it died: {_log(sim)}"
    )
    assert [(r.method, r.route) for r in sim.requests if r.method == "POST"] == [("POST", k.create_route)]
    [upstream_id] = k.objects(sim)
    obj = await kube.get(k.plural, k.name)
    assert obj is not None
    assert not (obj.get("status") or {}).get("id"), "the id reached the status: the kill came too late"
    assert FINALIZER in obj["metadata"]["finalizers"], "the finalizer must precede the create"
    if k.kind == "DedicatedEndpoint":
        assert CREATE_PENDING in obj["metadata"].get("annotations", {}), "the mark must precede the POST"

    # 4. A new process: it adopts the object the dead one made, and creates nothing.
    before_restart = len(sim.requests)
    second = operators.start()
    restarted_at = time.monotonic()
    try:
        obj = await kube.wait_condition(k.plural, k.name, "Ready", "True", timeout=20)
    except AssertionError:
        second.check_alive()
        current = await kube.get(k.plural, k.name)
        raise AssertionError(
            f"not Ready after the restart: Ready={condition(current, 'Ready')}; upstream objects {k.objects(sim)}; "
            f"POSTs {sim.count('POST')}; requests: {_log(sim)}"
        ) from None
    ready_after_restart = time.monotonic() - restarted_at
    second.check_alive()
    # The new process looked before it could have acted: its first upstream call is a read.
    assert sim.requests[before_restart].method == "GET", _log(sim)
    assert k.objects(sim) == [upstream_id], f"duplicates upstream: {k.objects(sim)}; requests: {_log(sim)}"
    assert sim.count("POST") == 1, f"a second POST after the restart: {_log(sim)}"
    assert obj["status"]["id"] == upstream_id
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "True"
    events = await kube.events(k.name)
    reasons = [e["reason"] for e in events]
    assert "Adopted" in reasons, f"no Adopted Event: {reasons}"
    assert "Created" not in reasons, f"the restarted operator reports a create: {reasons}"
    if k.kind == "DedicatedEndpoint":
        # Adopted through the create-pending search; the mark goes once the id is in the status.
        obj = await kube.wait_for(
            k.plural, k.name, lambda o: bool(o and CREATE_PENDING not in o["metadata"].get("annotations", {}))
        )
        assert obj is not None and obj["status"]["id"] == upstream_id

    # 5. Deleted with the new process running: the upstream object goes, then the finalizer.
    response = await kube.delete(k.plural, k.name)
    assert response.status_code in (200, 202), response.text
    await kube.wait_gone(k.plural, k.name)
    assert k.objects(sim) == [], f"upstream object left behind: {_log(sim)}"
    deletes = [r.status for r in sim.requests if r.method == "DELETE"]
    assert deletes and deletes[-1] is not None and deletes[-1] < 300, _log(sim)
    assert sim.count("POST") == 1
    second.check_alive()
    assert await second.stop() == 0, second.output()
    assert operators.leaked_keys() == []
    print(
        f"{k.kind}: POST held {reached_at - started:.1f}s after spawn, SIGKILL "
        f"{(killed_at - reached_at) * 1000:.2f} ms later; Ready {ready_after_restart:.1f}s after the restart; "
        f"total {time.monotonic() - started:.1f}s"
    )


async def test_settings_env_round_trips(kube_env: KubeEnv) -> None:
    """The environment given to the process reads back as the settings the in-process tests use."""
    from aigw_operator.base.settings import Settings

    settings = make_settings(kube_env, "http://127.0.0.1:1", metrics_port=None)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("AIGW_")]:
            mp.delenv(key)
        for key, value in settings_env(settings).items():
            mp.setenv(key, value)
        assert Settings() == settings
