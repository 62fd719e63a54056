"""``python -m watchdog``: read the environment once, set threads from the CPU limit, serve under gunicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from faas_infer.loglevel import env_level
from watchdog import command
from watchdog.config import ConfigError, WatchdogConfig
from watchdog.cpu import cgroup_cpu_quota, compute_threads, usable_cores


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. ``argv`` takes only ``--help`` (printed as ``faas-infer watchdog
    --help`` prints it, then exit 0): everything else comes from the environment."""
    parser = argparse.ArgumentParser(prog="python -m watchdog", description=command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_arguments(parser)
    parser.parse_args([] if argv is None else argv)
    try:
        config = WatchdogConfig.from_env(os.environ)  # LOG_LEVEL included: checked before logging uses it
    except ConfigError as exc:
        print(f"watchdog: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=env_level(os.environ),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = os.path.join(config.function_dir, "handler.py")
    if not os.path.isfile(handler):
        print(f"watchdog: configuration error: function_dir={config.function_dir}: no handler at "
              f"{os.path.abspath(handler)}", file=sys.stderr)
        return 2
    threads = compute_threads(config.cpu_limit, cgroup_cpu_quota(), usable_cores())
    # torch (imported later by the handler) sizes its intra-op pool from these.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    from watchdog.server import WatchdogApplication

    WatchdogApplication(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
