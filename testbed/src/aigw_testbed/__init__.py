"""aigw-testbed: the fakes that aigw-operator is tested and demonstrated against.

A Kubernetes API emulator (:mod:`aigw_testbed.emulator`), one simulator per upstream API
(:mod:`aigw_testbed.simulators`), a plain HTTP kubectl (:mod:`aigw_testbed.kubectl`) and the local
demo (:mod:`aigw_testbed.demo`). A separate distribution from the operator, so that neither
``pip install aigw-operator`` nor the operator's image carries any of it. It imports nothing of
the operator: it talks to it as a cluster would, over HTTP, and reads its CRDs from the files
``aigw-operator crds`` writes.
"""

from pathlib import Path

#: The operator's API group and version, as a client outside the operator spells them.
GROUP = "aigw.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: The vendors' published OpenAPI specs (and ours for the registry), shipped as package data.
SPECS = Path(__file__).parent / "specs"
