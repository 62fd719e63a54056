"""``faas-infer autoscale``: run the control loop (observe, decide, act) every --interval seconds.

Settings come from flags, else from environment variables named after the config fields (gateway_url,
redis_url, secret_mount_path, prometheus_url, ...), which is how ``faas-infer up`` starts it.
"""

from __future__ import annotations

import argparse
import signal
import threading

from autoscaler.flags import add_config_arguments, config_from_args

HELP = "run the autoscaler loop against an OpenFaaS gateway and Redis"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer autoscale`."""
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Loop until SIGTERM or SIGINT."""
    from autoscaler.loop import run_forever

    config = config_from_args(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(config, stop)
    return 0
