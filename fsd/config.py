"""Configuration of a partitioned deployment, read once from the environment handed in by the handler.

Coordinator and workers of one deployment get the same variables (the worker adds ``FSD_RANK``), so they
derive the same model, partition and schedules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from fsd.coordinator import Memory
from fsd.cost import Prices
from fsd.errors import ConfigError
from fsd.model import ModelSpec

CHANNELS = ("redis", "s3")
# Longest FSD_TIMEOUT: a day (inbox TTLs, job ids and HTTP timeouts are derived from it).
MAX_TIMEOUT = 86400.0
PARTITIONERS = ("connectivity", "random")


@dataclass(frozen=True)
class FsdConfig:
    """Everything a coordinator or worker is told, validated."""

    # FSD_WORKERS: number of worker functions W (ranks 0..W-1).
    workers: int = 1
    # FSD_RANK: this worker's rank; -1 for the coordinator.
    rank: int = -1
    # FSD_CHANNEL: "redis" (queue channel) or "s3" (object-storage channel).
    channel: str = "redis"
    # FSD_PARTITIONER: "connectivity" (minimises traffic) or "random".
    partitioner: str = "connectivity"
    # FSD_MODEL: the generated model, e.g. "neurons=1024,layers=120,seed=0".
    model: ModelSpec = field(default_factory=ModelSpec)
    # FSD_TIMEOUT: seconds a job may take; every wait of every rank ends by then.
    timeout: float = 10.0
    # FSD_REDIS_URL: Redis of the queue channel.
    redis_url: str = ""
    # FSD_MAX_MESSAGE_BYTES: largest queue frame (SQS: 256 KiB); bigger blocks are split.
    max_message_bytes: int = 256 * 1024
    # FSD_S3_ENDPOINT: S3 API base URL, path-style (AWS S3, MinIO, or the local test server).
    s3_endpoint: str = ""
    # FSD_S3_BUCKET: bucket of the object-storage channel (created if missing).
    s3_bucket: str = "fsd"
    # FSD_S3_ACCESS_KEY / FSD_S3_SECRET_KEY: SigV4 credentials; unset sends unsigned requests.
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # FSD_S3_REGION: SigV4 region.
    s3_region: str = "us-east-1"
    # FSD_WORKER_URLS: comma-separated worker URLs by rank (coordinator only).
    worker_urls: tuple[str, ...] = ()
    # FSD_GATEWAY + FSD_WORKER_FUNCTION: else worker rank r is <gateway>/function/<name>-<r>.
    gateway: str = ""
    worker_function: str = ""
    # FSD_PRICES: JSON object overriding cost-model prices.
    prices: Prices = field(default_factory=Prices)
    # FSD_COORDINATOR_MEMORY_MB / FSD_WORKER_MEMORY_MB: function memory the cost model bills.
    memory: Memory = field(default_factory=Memory)

    def __post_init__(self) -> None:
        _rule(self.workers >= 1, "FSD_WORKERS", self.workers, "must be >= 1")
        _rule(self.workers <= self.model.neurons, "FSD_WORKERS", self.workers, "must be <= neurons per layer")
        _rule(-1 <= self.rank < self.workers, "FSD_RANK", self.rank, f"must be 0..{self.workers - 1} (or unset)")
        _rule(self.channel in CHANNELS, "FSD_CHANNEL", self.channel, f"must be one of {', '.join(CHANNELS)}")
        _rule(self.partitioner in PARTITIONERS, "FSD_PARTITIONER", self.partitioner,
              f"must be one of {', '.join(PARTITIONERS)}")
        _rule(0 < self.timeout <= MAX_TIMEOUT, "FSD_TIMEOUT", self.timeout,
              f"must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
        for key, mb in (("FSD_COORDINATOR_MEMORY_MB", self.memory.coordinator),
                        ("FSD_WORKER_MEMORY_MB", self.memory.worker)):  # nan made every job's cost not JSON: 500
            _rule(0 < mb < math.inf, key, mb, "must be a number of MB > 0")
        _rule(self.max_message_bytes >= 1024, "FSD_MAX_MESSAGE_BYTES", self.max_message_bytes, "must be >= 1024")
        _rule(self.channel != "redis" or bool(self.redis_url), "FSD_REDIS_URL", self.redis_url,
              "must be set when FSD_CHANNEL=redis")
        _rule(self.channel != "s3" or bool(self.s3_endpoint), "FSD_S3_ENDPOINT", self.s3_endpoint,
              "must be set when FSD_CHANNEL=s3")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "FsdConfig":
        """Read the FSD_* variables of ``env``."""
        def get(key: str, default: str = "") -> str:
            return env.get(key, default).strip()

        urls = tuple(u.strip() for u in get("FSD_WORKER_URLS").split(",") if u.strip())
        return cls(
            workers=_num(int, "FSD_WORKERS", get("FSD_WORKERS", "1")),
            rank=_num(int, "FSD_RANK", get("FSD_RANK", "-1")),
            channel=get("FSD_CHANNEL", "redis"), partitioner=get("FSD_PARTITIONER", "connectivity"),
            model=ModelSpec.parse(get("FSD_MODEL")),
            timeout=_num(float, "FSD_TIMEOUT", get("FSD_TIMEOUT", "10")),
            redis_url=get("FSD_REDIS_URL"),
            max_message_bytes=_num(int, "FSD_MAX_MESSAGE_BYTES", get("FSD_MAX_MESSAGE_BYTES", str(256 * 1024))),
            s3_endpoint=get("FSD_S3_ENDPOINT"), s3_bucket=get("FSD_S3_BUCKET", "fsd"),
            s3_access_key=get("FSD_S3_ACCESS_KEY"), s3_secret_key=get("FSD_S3_SECRET_KEY"),
            s3_region=get("FSD_S3_REGION", "us-east-1"), worker_urls=urls,
            gateway=get("FSD_GATEWAY").rstrip("/"), worker_function=get("FSD_WORKER_FUNCTION"),
            prices=Prices.parse(get("FSD_PRICES")),
            memory=Memory(_num(float, "FSD_COORDINATOR_MEMORY_MB", get("FSD_COORDINATOR_MEMORY_MB", "256")),
                          _num(float, "FSD_WORKER_MEMORY_MB", get("FSD_WORKER_MEMORY_MB", "512"))))

    def deployment(self) -> str:
        """What every rank must agree on to compute one model: the model spec, the number of workers, the
        partitioner and the kind of channel (a coordinator on s3 with workers on redis timed out every job as
        "worker dead or message lost"); the channel's address (a rank may reach one Redis by another name) and
        the timeouts may differ. Sent with each job, checked by the worker."""
        m = self.model
        model = ",".join(f"{f}={getattr(m, f)!r}" for f in m.__dataclass_fields__)
        return f"{model};workers={self.workers};partitioner={self.partitioner};channel={self.channel}"

    def urls(self) -> tuple[str, ...]:
        """Worker URLs by rank: FSD_WORKER_URLS, else derived from FSD_GATEWAY and FSD_WORKER_FUNCTION."""
        if self.worker_urls:
            _rule(len(self.worker_urls) == self.workers, "FSD_WORKER_URLS", ",".join(self.worker_urls),
                  f"must list {self.workers} URLs (FSD_WORKERS)")
            return self.worker_urls
        _rule(bool(self.gateway and self.worker_function), "FSD_WORKER_URLS", "",
              "must be set, or FSD_GATEWAY and FSD_WORKER_FUNCTION")
        return tuple(f"{self.gateway}/function/{self.worker_function}-{r}" for r in range(self.workers))


def _rule(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def _num(kind: type, key: str, raw: str):
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: must be a {'number' if kind is float else 'whole number'}") from None
