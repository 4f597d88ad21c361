"""The default API key from a file (AIGW_<UPSTREAM>__API_KEY_FILE, a mounted Secret in the
chart): a rotated key, written as the kubelet writes a Secret volume, reaches the running
operator without a restart."""

from __future__ import annotations

import os
from pathlib import Path

from aigw_operator.base.settings import UpstreamSettings
from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.conftest import API_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings, release_resources, scan_for_canaries
from tests.operator.test_gateway_endpoint import KIND, PLURAL, spec

ROTATED = "bt-rotated-key-77aa01"  # a canary too: it must never be logged either
FAST = {"timeout": 1.0, "max_retries": 2, "backoff_base": 0.05, "backoff_cap": 0.2}


def write_like_the_kubelet(volume: Path, key: str, value: str) -> None:
    """The kubelet writes a new timestamped directory and swaps the ``..data`` link to it in one
    rename: a reader sees the old file or the new one, never half of one."""
    generation = sum(1 for p in volume.iterdir() if p.name.startswith("..2"))
    data = volume / f"..2026_{generation:02d}"
    data.mkdir()
    (data / key).write_text(value)
    link = volume / "..data_tmp"
    link.symlink_to(data.name)
    os.replace(link, volume / "..data")
    if not (volume / key).is_symlink():
        (volume / key).symlink_to(f"..data/{key}")


async def test_a_rotated_default_key_file_is_used_without_a_restart(
    kube_env: KubeEnv, baseten: BasetenSimulator, tmp_path: Path
) -> None:
    volume = tmp_path / "keys"
    volume.mkdir()
    key_file = volume / "baseten"
    upstream = UpstreamSettings(base_url=baseten.url, api_key_file=key_file, **FAST)
    runner = OperatorRunner(make_settings(kube_env, baseten.url, baseten=upstream))
    await runner.start()
    try:
        no_ref = {k: v for k, v in spec().items() if k != "credentialsSecretRef"}
        # No file yet (the Secret is not there): the resource says so, and recovers by itself.
        response = await kube_env.kube.create(KIND, PLURAL, "glm", no_ref)
        assert response.status_code == 201, response.text
        obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="CredentialsMissing")
        assert str(key_file) in condition(obj, "Ready")["message"]  # type: ignore[index]
        write_like_the_kubelet(volume, "baseten", API_KEY + "\n")
        obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
        assert {r.key for r in baseten.requests} == {API_KEY}

        # Rotated: Baseten takes only the new key now, and the volume holds it.
        baseten.rotate_key(API_KEY, ROTATED)
        write_like_the_kubelet(volume, "baseten", ROTATED)
        baseten.reset_counts()
        response = await kube_env.kube.patch_spec(
            PLURAL, "glm", {"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]}
        )
        assert response.status_code == 200, response.text
        obj = await kube_env.kube.wait_for(
            PLURAL,
            "glm",
            lambda o: bool(
                o and o["status"].get("observedGeneration") == 2 and condition(o, "Synced")["status"] == "True"
            ),  # type: ignore[index]
        )
        assert obj is not None
        assert baseten.endpoints[obj["status"]["id"]]["targets"][0]["model_id"] == "7mP2wqe"
        assert {r.key for r in baseten.requests if r.status < 400} == {ROTATED}
        assert runner.running  # the same operator, never restarted
        await scan_for_canaries(kube_env)
        await release_resources(kube_env.kube)
    finally:
        await runner.stop()
