"""FSD-Inference worker of rank FSD_RANK: holds its shard of the partitioned model and runs jobs.

Input (from the coordinator): {"job", "rank", "batch", "timeout", "expires", "deployment"}; a job sent for
another model or partition than this worker's FSD_* settings is refused. Output: the rank's report
(timing and channel usage). Activations travel over the channel, not in the request. Jobs of one batch run
concurrently so that no job waits behind another; none runs longer than this worker's own FSD_TIMEOUT.
A malformed body answers 400. Configuration: FSD_* variables (fsd/README.md).
"""

import os
from concurrent.futures import ThreadPoolExecutor

from batcher import BadInput
from fsd.config import FsdConfig
from fsd.deployment import build_worker
from fsd.errors import ConfigError, FsdError
from fsd.worker import JobSpec, run_worker


def load():
    """Build this rank's shard and schedule, and connect to the channel, once per process."""
    config = FsdConfig.from_env(os.environ)
    if config.rank < 0:
        raise ConfigError("FSD_RANK='': must be set to the worker's rank 0..FSD_WORKERS-1")
    program, channel = build_worker(config)
    return program, channel, config.timeout


def _job(state, request):
    program, channel, max_timeout = state
    try:
        spec = JobSpec.from_json(request.json())  # a BadInput (a ValueError) for any body that is not JSON
    except (ValueError, FsdError) as exc:
        return BadInput(f"bad job: {exc}")
    try:
        return run_worker(program, channel, spec, max_timeout).to_json()
    except Exception as exc:  # noqa: BLE001 - any failure is this job's alone (a 500 naming it): raised, it
        return exc  # failed the batch, whose bisection ran again jobs that had finished and consumed their inputs


def handle_batch(state, requests):
    """Run every job of the batch at once."""
    if len(requests) == 1:
        return [_job(state, requests[0])]
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(lambda r: _job(state, r), requests))
