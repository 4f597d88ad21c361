"""aigw-operator: AI gateway and inference resources on SaaS APIs, managed from Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aigw-operator")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"

GROUP = "aigw.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"
