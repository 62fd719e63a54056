"""The ``faas-infer`` command.

Subcommands are found, not listed here: a package's ``commands.py`` maps command names to modules
(``COMMANDS = {"up": "provider.up_command"}``), and every module in ``bench/`` is a ``faas-infer bench``
subcommand. A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and imports heavy things (torch, pulp) only inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import signal
import sys
from types import ModuleType

from faas_infer.loglevel import parse_level

PACKAGES = ("watchdog", "provider", "cop_profiler", "autoscaler", "fsd", "ops")


def _command_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in PACKAGES:
        try:
            commands = importlib.import_module(f"{package}.commands")
        except ModuleNotFoundError as exc:
            if exc.name in (package, f"{package}.commands"):
                continue
            raise
        found.update(commands.COMMANDS)
    return found


def _bench_modules() -> dict[str, str]:
    import bench

    return {m.name: f"bench.{m.name}" for m in pkgutil.iter_modules(bench.__path__)
            if not m.name.startswith("_") and not m.ispkg and m.name not in ("common", "loadgen")}


def _add(sub: argparse._SubParsersAction, name: str, module: ModuleType) -> None:
    parser = sub.add_parser(name, help=module.HELP, description=module.__doc__ or module.HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)


def _log_level(text: str) -> str:
    # argparse also runs this on the $LOG_LEVEL default, so a bad one is a usage error too, not a traceback.
    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every discovered subcommand."""
    from faas_infer import __version__

    parser = argparse.ArgumentParser(prog="faas-infer", description=
                                     "ML inference on OpenFaaS: batching, COP latency prediction, ILP autoscaling.")
    parser.add_argument("--version", action="version", version=f"faas-infer {__version__}")
    parser.add_argument("--log-level", type=_log_level, default=os.environ.get("LOG_LEVEL", "INFO"),
                        help="logging level: DEBUG, INFO, WARNING or ERROR (default INFO, or $LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, path in sorted(_command_modules().items()):
        _add(sub, name, importlib.import_module(path))
    bench_parser = sub.add_parser("bench", help="run a benchmark: prints a table, --json writes rows")
    bench_sub = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for name, path in sorted(_bench_modules().items()):
        _add(bench_sub, name, importlib.import_module(path))
    bench_parser.set_defaults(_run=lambda args: bench_parser.print_help() or 2)
    return parser


def _exit_on_sigterm(*_: object) -> None:
    # A benchmark stopped by SIGTERM (timeout, kill, a cancelled CI job) died without its finally blocks and
    # left the watchdogs, Redis and S3 server it started running; as SystemExit, they are stopped.
    raise SystemExit(128 + signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if args.command == "bench":
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader gone by then is this handler's too
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `faas-infer top --once | head`: the reader left; no traceback, no flush error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
