"""``aigw-operator run | demo | crds | drain``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from aigw_operator import crds, logs
from aigw_operator.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aigw-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the configured Kubernetes API")
    run.add_argument("--log-format", choices=["text", "json"], help="overrides AIGW_LOG_FORMAT")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides AIGW_LOG_LEVEL")
    run.add_argument(
        "--liveness", default=None, help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz"
    )

    demo = commands.add_parser("demo", help="local demo: API emulator, upstream simulators and the real operator")
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")

    crd = commands.add_parser("crds", help="print the CRDs generated from the models, or write them")
    crd.add_argument("--output-dir", type=Path, help="write one YAML file per CRD here instead of printing")

    drain = commands.add_parser(
        "drain",
        help="uninstall aid: remove the operator's finalizer from every aigw.dev resource (orphans upstream objects)",
    )
    drain.add_argument("--kube-api-url", help="talk to this API server without credentials (the emulator)")
    drain.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, then $KUBECONFIG or ~/.kube/config")
    drain.add_argument("--context", help="kubeconfig context")
    drain.add_argument("--namespace", "-n", help="only this namespace; default: all namespaces")
    drain.add_argument("--dry-run", action="store_true", help="list what would be released, change nothing")
    drain.add_argument(
        "--verify-after", type=float, default=2.0, help="seconds to wait before checking no operator re-added it"
    )

    args = parser.parse_args(argv)
    if args.command == "crds":
        if args.output_dir:
            for path in crds.write(args.output_dir):
                print(path)
        else:
            sys.stdout.write(crds.render_all())
        return 0
    if args.command == "run":
        settings = Settings()
        logs.configure(args.log_level or settings.log_level, args.log_format or settings.log_format)
        from aigw_operator.operator import run as run_operator

        asyncio.run(run_operator(settings, liveness_endpoint=args.liveness))
        return 0
    if args.command == "drain":
        from aigw_operator import drain as drain_module

        return asyncio.run(
            drain_module.run(
                args.kube_api_url,
                kubeconfig=args.kubeconfig,
                context=args.context,
                namespace=args.namespace,
                dry_run=args.dry_run,
                verify_after=args.verify_after,
            )
        )
    if args.command == "demo":
        from aigw_operator.demo import demo as run_demo

        return asyncio.run(run_demo(timeout=args.timeout))
    return 2


if __name__ == "__main__":
    sys.exit(main())
