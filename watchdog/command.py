"""Run the batching watchdog in the current folder (configured by environment variables, as in OpenFaaS).

Environment (durations as 10s / 250ms / bare seconds): port, metrics_port, bind_address, read_timeout,
write_timeout, exec_timeout, healthcheck_interval, max_inflight, suppress_lock, tmp_dir (unset: $TMPDIR),
function_dir, max_batch_size, batch_timeout, latency_slo, max_queue, max_request_bytes, batch_backend,
redis_url, function_name, instance_id, cpu_limit, memory_limit, gpu_share, retain_freed_memory,
http_engine, http_threads, handler_process, exec_prior. The README's section "The watchdog" explains each
one.
"""

from __future__ import annotations

import argparse

HELP = "run the batching watchdog (the function runtime) in this folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags: the watchdog is configured by environment variables, as OpenFaaS's is."""


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM."""
    from watchdog.__main__ import main

    return main()
