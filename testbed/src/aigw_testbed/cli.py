"""The ``aigw-testbed`` command: ``demo``."""

from __future__ import annotations

# Only the standard library at module level: a Ctrl-C during the (slow) imports inside main()
# then ends the process quietly instead of with a traceback.
import argparse
import contextlib
import sys
from pathlib import Path

#: Exit code after Ctrl-C: 128 + SIGINT, as a shell reports a process killed by it.
INTERRUPTED = 130

DEMO_STOPPED = "aigw-testbed demo: stopped; the operator and the simulators are shut down."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigw-testbed",
        description="The fakes aigw-operator is tested against: a Kubernetes API emulator and one "
        "simulator per upstream API, on loopback. Needs aigw-operator installed beside it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")
    demo = commands.add_parser(
        "demo",
        help="everything on this machine, no cluster and no SaaS account: a Kubernetes API "
        "emulator, the upstream simulators and the real operator, applying the examples",
        description="Start a Kubernetes API emulator and the upstream simulators on loopback, run the "
        "real operator (aigw-operator run) against them, apply the repository's examples/ and show a "
        "table until every resource is Ready. Exit code 0 when all are Ready, 1 when not within "
        "--timeout, 130 when stopped by Ctrl-C.",
    )
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (default 120)")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="stay up after everything is Ready, write a kubeconfig for the emulator and print kubectl "
        "commands to look around; stop with Ctrl-C",
    )
    demo.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="with --keep-running: write the emulator's kubeconfig here (default: a temporary file, "
        "removed on exit); an existing file is only overwritten if an earlier demo wrote it",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kubeconfig is not None and not args.keep_running:
        print("aigw-testbed demo: --kubeconfig needs --keep-running", file=sys.stderr)
        return 2
    try:
        import asyncio

        from aigw_testbed.demo import demo

        code = asyncio.run(demo(timeout=args.timeout, keep_running=args.keep_running, kubeconfig=args.kubeconfig))
    except KeyboardInterrupt:  # Ctrl-C before the demo installed its own handling (the imports)
        code = INTERRUPTED
    if code > 128:  # stopped by a signal (130: Ctrl-C)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(DEMO_STOPPED, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
