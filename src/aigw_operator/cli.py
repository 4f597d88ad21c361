"""The ``aigw-operator`` command: ``run``, ``crds`` and ``drain``.

The local demo is not here: it lives with the simulators in the separate ``aigw-testbed``
distribution (``aigw-testbed demo``), so the operator's package and image carry no fakes.
"""

from __future__ import annotations

# Only the standard library at module level: everything else is imported inside main(), where a
# Ctrl-C during the (slow) imports is caught and ends the process quietly instead of with a traceback.
import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

DESCRIPTION = """\
Manage AI gateway and inference resources on SaaS APIs (Baseten, ngrok, Together AI, a model
registry) from Kubernetes custom resources in the aigw.dev group."""

EPILOG = """\
Settings come from environment variables AIGW_* (nested with __, e.g. AIGW_BASETEN__BASE_URL);
README.md's "Configuration" section lists them. `aigw-operator run` finds the Kubernetes API as
kubectl does (in-cluster service account, else $KUBECONFIG or ~/.kube/config), unless
AIGW_KUBE_API_URL names an API server to use without credentials (the testbed's emulator).

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted by Ctrl-C (SIGINT); once it is
up, `run` treats SIGINT and SIGTERM as a normal shutdown (0).
`aigw-operator <command> --help` shows a command's options."""

#: Where a pod's service account token is mounted (the in-cluster configuration kopf uses).
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

#: Exit code after Ctrl-C: 128 + SIGINT, as a shell reports a process killed by it.
INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigw-operator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")

    run = commands.add_parser(
        "run",
        help="the operator: reconcile aigw.dev resources with the upstream APIs",
        description="Run the operator. Kubernetes API: in-cluster service account, $KUBECONFIG, "
        "~/.kube/config, or AIGW_KUBE_API_URL (no credentials). Stops cleanly on SIGINT or SIGTERM.",
    )
    run.add_argument("--log-format", choices=["text", "json"], help="overrides AIGW_LOG_FORMAT")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides AIGW_LOG_LEVEL")
    run.add_argument(
        "--liveness", default=None, help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz"
    )

    crd = commands.add_parser(
        "crds", help="print the CustomResourceDefinitions generated from the models, or write them"
    )
    crd.add_argument("--output-dir", type=Path, help="write one YAML file per CRD here instead of printing")

    drain = commands.add_parser(
        "drain",
        help="uninstall aid: remove the operator's finalizer from every aigw.dev resource (orphans upstream objects)",
    )
    drain.add_argument("--kube-api-url", help="talk to this API server without credentials (the emulator)")
    drain.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, then $KUBECONFIG or ~/.kube/config")
    drain.add_argument("--context", help="kubeconfig context")
    drain.add_argument(
        "--namespace", "-n", action="append", help="only this namespace (repeat for several); default: all namespaces"
    )
    drain.add_argument("--dry-run", action="store_true", help="list what would be released, change nothing")
    drain.add_argument(
        "--verify-after", type=float, default=2.0, help="seconds to wait before checking no operator re-added it"
    )
    drain.add_argument(
        "--policy",
        choices=["Delete", "Retain"],
        help="uninstall with the operator still running (the chart's pre-delete hook): Delete deletes every "
        "resource and waits while the operator deletes their upstream objects; Retain stops the operator "
        "(--stop-deployment) and releases the finalizers, orphaning the upstream objects",
    )
    drain.add_argument("--timeout", type=float, default=240.0, help="with --policy: give up (exit 1) after this long")
    drain.add_argument(
        "--stop-deployment",
        metavar="NAMESPACE/NAME",
        help="with --policy Retain: scale this Deployment (the operator) to 0 before draining",
    )
    return parser


def missing_kube_api(
    environ: Mapping[str, str], *, kube_api_url: str | None, token: Path = SERVICE_ACCOUNT_TOKEN
) -> str | None:
    """Why ``run`` cannot reach any Kubernetes API, or None when one of the sources is there.

    Without this, kopf's login handlers find nothing and retry every minute for ever, with a
    traceback each time; checking the same sources first turns that into one line and an exit.
    """
    if kube_api_url:
        return None
    if environ.get("KUBERNETES_SERVICE_HOST") and token.exists():
        return None
    kubeconfig = environ.get("KUBECONFIG", "")
    if kubeconfig:
        paths = [Path(p.strip()).expanduser() for p in kubeconfig.split(os.pathsep) if p.strip()]
        absent = [str(p) for p in paths if not p.is_file()]
        if paths and not absent:
            return None
        if paths and len(absent) < len(paths):
            # kubectl skips a missing file in the list, but kopf's kubeconfig login fails on it.
            return f"$KUBECONFIG lists files that do not exist: {', '.join(absent)}"
        looked_in = f"$KUBECONFIG ({kubeconfig}: not found), ~/.kube/config (not used when $KUBECONFIG is set)"
    else:
        default = Path("~/.kube/config").expanduser()
        if default.is_file():
            return None
        looked_in = f"$KUBECONFIG (unset), ~/.kube/config ({default}: not found)"
    in_cluster = "set" if environ.get("KUBERNETES_SERVICE_HOST") else "unset"
    return (
        "no Kubernetes API configured; looked for: in-cluster service account "
        f"($KUBERNETES_SERVICE_HOST {in_cluster}, {token}{' present' if token.exists() else ': not found'}), "
        f"{looked_in}, AIGW_KUBE_API_URL (unset)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        # Ctrl-C before a command installed its own handling (e.g. during the imports). Silent: the
        # shell shows ^C already, and kopf logs its own stop.
        return INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    import asyncio

    if args.command == "crds":
        from aigw_operator import crds

        if args.output_dir:
            for path in crds.write(args.output_dir):
                print(path)
        else:
            sys.stdout.write(crds.render_all())
        return 0
    if args.command == "run":
        from aigw_operator.base import logs
        from aigw_operator.base.settings import Settings

        settings = Settings()
        problem = missing_kube_api(os.environ, kube_api_url=settings.kube_api_url)
        if problem:
            print(f"aigw-operator run: {problem}", file=sys.stderr)
            return 1
        logs.configure(args.log_level or settings.log_level, args.log_format or settings.log_format)
        from aigw_operator.runtime.operator import LeadershipLost
        from aigw_operator.runtime.operator import run as run_operator

        try:
            asyncio.run(run_operator(settings, liveness_endpoint=args.liveness))
        except LeadershipLost as exc:
            # Exit so that Kubernetes restarts the pod as a standby, as controller-runtime does.
            print(f"aigw-operator run: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "drain":
        from aigw_operator.runtime import drain as drain_module

        if args.policy:
            deployment = None
            if args.stop_deployment:
                namespace, _, name = args.stop_deployment.partition("/")
                if not namespace or not name:
                    print("aigw-operator drain: --stop-deployment takes NAMESPACE/NAME", file=sys.stderr)
                    return 2
                deployment = (namespace, name)
            return asyncio.run(
                drain_module.run_uninstall(
                    args.kube_api_url,
                    policy=args.policy,
                    kubeconfig=args.kubeconfig,
                    context=args.context,
                    namespaces=args.namespace,
                    timeout=args.timeout,
                    deployment=deployment,
                    verify_after=args.verify_after,
                )
            )
        return asyncio.run(
            drain_module.run(
                args.kube_api_url,
                kubeconfig=args.kubeconfig,
                context=args.context,
                namespaces=args.namespace,
                dry_run=args.dry_run,
                verify_after=args.verify_after,
            )
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
