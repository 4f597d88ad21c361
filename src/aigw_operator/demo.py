"""``aigw-operator demo``: the whole loop on one machine, no cluster and no SaaS account.

Starts the Kubernetes API emulator and the Baseten simulator in this process, runs the real
operator as a separate process against them, applies examples/, and shows a live table
until every resource is Ready.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from aigw_operator.crds import all_crds, all_kinds
from aigw_operator.simulators.admission import admit
from aigw_operator.simulators.baseten import BasetenSimulator
from aigw_operator.simulators.kubectl import Kube, condition
from aigw_operator.simulators.kubernetes import KubeEmulator, KubeEmulatorServer
from aigw_operator.simulators.model_registry import ModelRegistrySimulator
from aigw_operator.simulators.ngrok import NgrokSimulator
from aigw_operator.simulators.together import TogetherSimulator

NAMESPACE = "demo"
DEMO_KEY = "demo-baseten-key"
NGROK_DEMO_KEY = "demo-ngrok-key"
REGISTRY_DEMO_KEY = "demo-registry-key"
TOGETHER_DEMO_KEY = "demo-together-key"


def find_examples() -> Path:
    for candidate in (Path.cwd() / "examples", Path(__file__).resolve().parents[2] / "examples"):
        if candidate.is_dir():
            return candidate
    raise SystemExit("examples/ not found: run the demo from the repository's root")


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


async def apply(kube: Kube, manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    if manifest["kind"] == "Secret":
        # The API server turns stringData into data; the demo does it for the emulator.
        data = dict(manifest.get("stringData") or {})
        data.update({k: base64.b64decode(v).decode() for k, v in (manifest.get("data") or {}).items()})
        await kube.put_secret(meta["name"], data)
        return
    plural = _plural(manifest["kind"])
    response = await kube.create(manifest["kind"], plural, meta["name"], manifest["spec"], meta.get("annotations"))
    if response.status_code not in (200, 201):
        raise SystemExit(f"applying {manifest['kind']}/{meta['name']} failed: {response.text}")


def _plural(kind: str) -> str:
    return {info.kind: info.plural for info in all_kinds()}[kind]


def render(rows: list[list[str]]) -> str:
    header = ["KIND", "NAME", "READY", "REASON", "UPSTREAM ID", "MESSAGE"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1][:70]]))
    return "\n".join(lines)


async def snapshot(kube: Kube, resources: list[dict[str, Any]]) -> tuple[list[list[str]], bool]:
    rows = []
    all_ready = True
    for manifest in resources:
        obj = await kube.get(_plural(manifest["kind"]), manifest["metadata"]["name"])
        ready = condition(obj, "Ready") or {}
        all_ready = all_ready and ready.get("status") == "True"
        rows.append(
            [
                manifest["kind"],
                manifest["metadata"]["name"],
                ready.get("status", "-"),
                ready.get("reason", "Pending"),
                ((obj or {}).get("status") or {}).get("id") or "-",
                ready.get("message", ""),
            ]
        )
    return rows, all_ready


async def demo(timeout: float = 120.0) -> int:
    manifests = load_manifests(find_examples())
    resources = [m for m in manifests if m["apiVersion"].startswith("aigw.dev/")]
    emulator = KubeEmulator(admission=admit)
    async with (
        KubeEmulatorServer(emulator) as kube_server,
        BasetenSimulator(api_keys=[DEMO_KEY]) as baseten,
        NgrokSimulator(api_keys=[NGROK_DEMO_KEY]) as ngrok,
        ModelRegistrySimulator(admin_key=REGISTRY_DEMO_KEY) as registry,
        # A short simulated start-up, so the table shows PENDING -> STARTING -> STARTED.
        TogetherSimulator(api_keys=[TOGETHER_DEMO_KEY], pending_seconds=1.0, starting_seconds=2.0) as together,
        httpx.AsyncClient(base_url=kube_server.url, timeout=10) as http,
    ):
        # Baseten names secrets by an id it assigns; the example refers to the secret by name.
        secret = baseten.put_secret("anthropic-key", "sk-demo-not-a-real-key")
        for manifest in resources:
            for target in manifest["spec"].get("targets", []):
                if target.get("secretId") == secret.name:
                    target["secretId"] = secret.id
        kube = Kube(http, namespace=NAMESPACE)
        await kube.ensure_namespace(NAMESPACE)
        for crd in all_crds():
            await kube.apply_crd(crd)
        print(f"Kubernetes API emulator: {kube_server.url}")
        print(f"Baseten simulator:       {baseten.url}")
        print(f"ngrok simulator:         {ngrok.url}")
        print(f"model registry:          {registry.url}/api/v1")
        print(f"Together simulator:      {together.url}/v1")
        env = dict(
            os.environ,
            AIGW_KUBE_API_URL=kube_server.url,
            AIGW_BASETEN__BASE_URL=baseten.url,
            AIGW_NGROK__BASE_URL=ngrok.url,
            AIGW_MODEL_REGISTRY__BASE_URL=f"{registry.url}/api/v1",
            AIGW_TOGETHER__BASE_URL=f"{together.url}/v1",
            AIGW_LOG_LEVEL="WARNING",
            AIGW_SHORT_POLL_INTERVAL="1",
            AIGW_METRICS_PORT="0",
        )
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "aigw_operator.cli", "run", env=env)
        print(f"operator:                pid {process.pid} (aigw-operator run)\n")
        try:
            for manifest in manifests:
                await apply(kube, manifest)
                print(f"applied {manifest['kind']}/{manifest['metadata']['name']}")
            print()
            return await watch(kube, resources, process, timeout)
        finally:
            if process.returncode is None:
                process.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 10)
                if process.returncode is None:
                    process.kill()


async def watch(
    kube: Kube, resources: list[dict[str, Any]], process: asyncio.subprocess.Process, timeout: float
) -> int:
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        if process.returncode is not None:
            print(f"the operator exited with code {process.returncode}")
            return 1
        rows, all_ready = await snapshot(kube, resources)
        table = render(rows)
        if table != last:
            print(f"[{time.monotonic() - started:5.1f}s]\n{table}\n", flush=True)
            last = table
        if all_ready:
            print(f"All {len(resources)} resources are Ready.")
            return 0
        await asyncio.sleep(0.2)
    print(f"Not all resources became Ready within {timeout:.0f}s.")
    return 1
