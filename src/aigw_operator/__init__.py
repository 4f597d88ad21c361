"""aigw-operator: AI gateway and inference resources on SaaS APIs, managed from Kubernetes."""

GROUP = "aigw.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"
