"""``aigw-testbed demo``: the whole loop on one machine, no cluster and no SaaS account.

Starts the Kubernetes API emulator and the upstream simulators in this process, runs the real
operator as a separate process against them, applies examples/, and shows a live table until
every resource is Ready. With ``keep_running`` it then stays up, writes a kubeconfig for the
emulator and prints kubectl commands to look around, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from aigw_testbed import API_VERSION
from aigw_testbed.emulator.admission import admit
from aigw_testbed.emulator.server import KubeEmulator, KubeEmulatorServer
from aigw_testbed.kubectl import Kube, condition
from aigw_testbed.simulators import demo_upstreams

NAMESPACE = "demo"

#: The kubeconfig context (and cluster and user) the demo writes; also how it recognises its own file.
KUBE_CONTEXT = "aigw-demo"

#: Signals that stop the demo cleanly; it then exits with 128 + the signal's number, as a shell
#: reports a process killed by it: 130 after Ctrl-C, so a script can tell "stopped" from 0 and 1.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


#: The repository's examples/, shipped as package data (a link to them in a source checkout).
EXAMPLES = Path(__file__).parent / "examples"


async def operator_crds() -> list[dict[str, Any]]:
    """The CRDs of the installed operator, as ``aigw-operator crds`` prints them.

    Asked of the operator's command, not imported from its package: the testbed stands where a
    cluster does and knows the operator only by what it publishes.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aigw_operator.cli",
        "crds",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"`aigw-operator crds` failed (is aigw-operator installed here?): {err.decode().strip()}")
    return [crd for crd in yaml.safe_load_all(out) if crd]


def plurals(crds: list[dict[str, Any]]) -> dict[str, str]:
    return {crd["spec"]["names"]["kind"]: crd["spec"]["names"]["plural"] for crd in crds}


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


async def apply(kube: Kube, manifest: dict[str, Any], plural_of: dict[str, str]) -> None:
    meta = manifest["metadata"]
    if manifest["kind"] == "Secret":
        # The API server turns stringData into data; the demo does it for the emulator.
        data = dict(manifest.get("stringData") or {})
        data.update({k: base64.b64decode(v).decode() for k, v in (manifest.get("data") or {}).items()})
        await kube.put_secret(meta["name"], data)
        return
    plural = plural_of[manifest["kind"]]
    response = await kube.create(manifest["kind"], plural, meta["name"], manifest["spec"], meta.get("annotations"))
    if response.status_code not in (200, 201):
        raise SystemExit(f"applying {manifest['kind']}/{meta['name']} failed: {response.text}")


def render(rows: list[list[str]]) -> str:
    header = ["KIND", "NAME", "READY", "REASON", "UPSTREAM ID", "MESSAGE"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1][:70]]))
    return "\n".join(lines)


async def snapshot(
    kube: Kube, resources: list[dict[str, Any]], plural_of: dict[str, str]
) -> tuple[list[list[str]], bool]:
    rows = []
    all_ready = True
    for manifest in resources:
        obj = await kube.get(plural_of[manifest["kind"]], manifest["metadata"]["name"])
        ready = condition(obj, "Ready") or {}
        all_ready = all_ready and ready.get("status") == "True"
        rows.append(
            [
                manifest["kind"],
                manifest["metadata"]["name"],
                ready.get("status", "-"),
                # Only after a kubectl delete (every resource is created before the first look).
                ready.get("reason", "Pending") if obj is not None else "NotFound",
                ((obj or {}).get("status") or {}).get("id") or "-",
                ready.get("message", ""),
            ]
        )
    return rows, all_ready


def kubeconfig_text(server: str) -> str:
    """A kubeconfig for the emulator: plain HTTP on loopback, no credentials, namespace ``demo``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": KUBE_CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": KUBE_CONTEXT, "user": {}}],
        "contexts": [
            {"name": KUBE_CONTEXT, "context": {"cluster": KUBE_CONTEXT, "user": KUBE_CONTEXT, "namespace": NAMESPACE}}
        ],
        "current-context": KUBE_CONTEXT,
    }
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def kubeconfig_file(server: str, path: Path | None) -> Iterator[Path]:
    """Write the emulator's kubeconfig; a file of our own making (in a temp dir) goes away afterwards.

    A path given by the user is written only if it is absent or an earlier demo's file: pointing
    ``--kubeconfig`` at a real ``~/.kube/config`` by mistake must not overwrite it.
    """
    if path is None:
        with tempfile.TemporaryDirectory(prefix="aigw-demo-") as directory:
            own = Path(directory) / "kubeconfig"
            own.write_text(kubeconfig_text(server))
            yield own
        return
    if path.exists():
        try:
            existing = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            existing = {}
        if not isinstance(existing, dict) or existing.get("current-context") != KUBE_CONTEXT:
            raise SystemExit(f"{path} exists and is not a kubeconfig the demo wrote: not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(kubeconfig_text(server))
    yield path


def how_to_look(kubeconfig: Path, resources: list[dict[str, Any]]) -> str:
    kubectl = f"kubectl --kubeconfig {shlex.quote(str(kubeconfig))}"
    first: dict[str, str] = {}
    for manifest in resources:
        first.setdefault(manifest["kind"].lower(), manifest["metadata"]["name"])
    lines = [
        "Everything keeps running; press Ctrl-C to stop.",
        f"The emulator's kubeconfig is {kubeconfig} (namespace {NAMESPACE}). Try:",
        f"  {kubectl} get aigw -A",
    ]
    lines += [f"  {kubectl} describe {kind} {name}" for kind, name in first.items()]
    if "gatewayendpoint" in first:
        lines.append(f"  {kubectl} get gatewayendpoint {first['gatewayendpoint']} -o yaml")
    lines.append(f"  {kubectl} get events")
    if "gatewayendpoint" in first:
        lines.append(
            f"  {kubectl} delete gatewayendpoint {first['gatewayendpoint']}   # the operator deletes it upstream too"
        )
    return "\n".join(lines)


async def demo(timeout: float = 120.0, *, keep_running: bool = False, kubeconfig: Path | None = None) -> int:
    """Run the demo; 0 = every resource Ready, 1 = not within ``timeout`` or the operator died,
    128 + signal = stopped by one of :data:`STOP_SIGNALS` (after a clean shutdown, printing nothing)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        # Only the first signal cancels: a second Ctrl-C must not cut the shutdown (and the
        # operator process) short; the shutdown's own timeouts bound it.
        if not received:
            received.append(signum)
            main.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await _demo(timeout, keep_running, kubeconfig)
    except asyncio.CancelledError:
        if not received:
            raise
        main.uncancel()
        return 128 + received[0]
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _demo(timeout: float, keep_running: bool, kubeconfig: Path | None) -> int:
    crds = await operator_crds()
    plural_of = plurals(crds)
    manifests = load_manifests(EXAMPLES)
    resources = [m for m in manifests if m["apiVersion"] == API_VERSION]
    emulator = KubeEmulator(admission=admit)
    async with (
        KubeEmulatorServer(emulator) as kube_server,
        contextlib.AsyncExitStack() as stack,
        httpx.AsyncClient(base_url=kube_server.url, timeout=10) as http,
    ):
        upstreams = demo_upstreams()
        urls: dict[str, str] = {}
        for upstream in upstreams:
            simulator = await stack.enter_async_context(upstream.start(upstream.key))
            if upstream.prepare is not None:
                upstream.prepare(simulator, resources)
            urls[upstream.title] = f"{simulator.url}{upstream.api_path}"
        kube = Kube(http, namespace=NAMESPACE)
        await kube.ensure_namespace(NAMESPACE)
        for crd in crds:
            await kube.apply_crd(crd)
        width = max(len(title) for title in ["Kubernetes API emulator", *urls]) + 2
        for title, url in {"Kubernetes API emulator": kube_server.url, **urls}.items():
            print(f"{title + ':':<{width}}{url}")
        env = dict(
            os.environ,
            AIGW_KUBE_API_URL=kube_server.url,
            **{f"AIGW_{upstream.setting.upper()}__BASE_URL": urls[upstream.title] for upstream in upstreams},
            AIGW_LOG_LEVEL="WARNING",
            AIGW_SHORT_POLL_INTERVAL="1",
            AIGW_METRICS_PORT="0",
        )
        # Its own process group: the terminal's Ctrl-C reaches only the demo, which then stops the
        # operator with one SIGTERM. Sharing the Ctrl-C would interrupt an operator still importing
        # (a traceback), and a second signal while kopf is stopping makes kopf log one too.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aigw_operator.cli", "run", env=env, process_group=0
        )
        print(f"{'operator:':<{width}}pid {process.pid} (aigw-operator run)\n", flush=True)
        try:
            for manifest in manifests:
                await apply(kube, manifest, plural_of)
                print(f"applied {manifest['kind']}/{manifest['metadata']['name']}")
            print()
            table = Watch(kube, resources, plural_of, process)
            code = await table.until_ready(timeout)
            if not keep_running or process.returncode is not None:
                return code
            with kubeconfig_file(kube_server.url, kubeconfig) as path:
                print(f"\n{how_to_look(path, resources)}\n", flush=True)
                return await table.forever()
        finally:
            # Inside the ``async with``: the operator stops while the emulator still answers it.
            await _stop_operator(process)


async def _stop_operator(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)
    if process.returncode is None:
        process.kill()
        await process.wait()


class Watch:
    """The live table: printed whenever it changes, timed from the demo's start."""

    def __init__(
        self,
        kube: Kube,
        resources: list[dict[str, Any]],
        plural_of: dict[str, str],
        process: asyncio.subprocess.Process,
    ) -> None:
        self.kube = kube
        self.resources = resources
        self.plural_of = plural_of
        self.process = process
        self.started = time.monotonic()
        self.last = ""

    async def until_ready(self, timeout: float) -> int:
        """0 once every resource is Ready; 1 when the operator exits or ``timeout`` passes first."""
        while time.monotonic() - self.started < timeout:
            if await self._step():
                print(f"All {len(self.resources)} resources are Ready.", flush=True)
                return 0
            if self.process.returncode is not None:
                return self._operator_exited()
            await asyncio.sleep(0.2)
        print(f"Not all resources became Ready within {timeout:.0f}s.", flush=True)
        return 1

    async def forever(self) -> int:
        """Keep the table current (kubectl edits show up) until the operator exits (1)."""
        while self.process.returncode is None:
            await self._step()
            await asyncio.sleep(0.5)
        return self._operator_exited()

    async def _step(self) -> bool:
        rows, all_ready = await snapshot(self.kube, self.resources, self.plural_of)
        table = render(rows)
        if table != self.last:
            print(f"[{time.monotonic() - self.started:5.1f}s]\n{table}\n", flush=True)
            self.last = table
        return all_ready

    def _operator_exited(self) -> int:
        print(f"the operator exited with code {self.process.returncode}", flush=True)
        return 1
