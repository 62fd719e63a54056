"""Building a deployment's pieces from its config: model, partition, channel, programs, coordinator."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from fsd.channel import Channel
from fsd.config import FsdConfig
from fsd.coordinator import Coordinator
from fsd.errors import ChannelError
from fsd.invoke import HttpInvoker, Invoker
from fsd.model import SparseModel, generate
from fsd.partition import Partition, partition
from fsd.redis_channel import RedisQueueChannel
from fsd.schedule import WorkerProgram, coordinator_plan, worker_program
from fsd.sigv4 import Credentials

# Seconds a Redis request may take before the channel gives up on a Redis that stopped answering.
REDIS_REQUEST_TIMEOUT = 2.0
# Seconds past a job's expiry before a starting coordinator sweeps its leftovers (covers clock skew).
SWEEP_GRACE = 60.0

logger = logging.getLogger(__name__)


def make_channel(config: FsdConfig) -> Channel:
    """The channel the config names; the S3 bucket is created when missing. No backend request takes
    longer than FSD_TIMEOUT (Redis: at most ``REDIS_REQUEST_TIMEOUT`` either)."""
    if config.channel == "redis":
        return RedisQueueChannel.from_url(config.redis_url, max_message_bytes=config.max_message_bytes,
                                          ttl=int(config.timeout) + 60,
                                          request_timeout=min(REDIS_REQUEST_TIMEOUT, config.timeout))
    from fsd.s3_channel import S3Channel
    from fsd.s3_client import S3Client

    creds = (Credentials(config.s3_access_key, config.s3_secret_key, config.s3_region)
             if config.s3_access_key else None)
    client = S3Client(config.s3_endpoint, creds, timeout=config.timeout)
    client.create_bucket(config.s3_bucket)
    return S3Channel(client, config.s3_bucket)


def model_and_partition(config: FsdConfig) -> tuple[SparseModel, Partition]:
    """The generated model and its partition; deterministic, so every rank derives the same ones."""
    model = generate(config.model)
    return model, partition(model, config.workers, config.partitioner, seed=config.model.seed)


def build_worker(config: FsdConfig) -> tuple[WorkerProgram, Channel]:
    """The program of ``config.rank`` and its channel."""
    model, parts = model_and_partition(config)
    program = replace(worker_program(model, parts, config.rank), deployment=config.deployment())
    return program, make_channel(config)


def build_coordinator(config: FsdConfig, invoker: Invoker | None = None) -> tuple[Coordinator, SparseModel]:
    """A coordinator invoking the workers over HTTP (or ``invoker``), and the model (for its inputs)."""
    model, parts = model_and_partition(config)
    channel = make_channel(config)
    try:  # a coordinator starting after one died mid-job removes what that one's jobs left
        channel.sweep(time.time() - SWEEP_GRACE)
    except ChannelError:
        logger.exception("fsd: cannot sweep the leftovers of expired jobs")
    plan = replace(coordinator_plan(model, parts), deployment=config.deployment())
    coordinator = Coordinator(plan, channel, invoker or HttpInvoker(config.urls()), config.timeout, config.prices,
                              config.memory)
    return coordinator, model
