"""``python -m autoscaler``: the sidecar, configured only by environment variables named after the fields
of ``AutoscalerConfig`` (``faas-infer up`` starts it this way)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from autoscaler.config import AutoscalerConfig, ConfigError
from faas_infer.loglevel import configure_from_env
from autoscaler.loop import run_forever


def main() -> int:
    """Read the config from os.environ and loop until SIGTERM."""
    if not configure_from_env(os.environ, "autoscaler"):
        return 2
    try:
        config = AutoscalerConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"autoscaler: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(config, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
