"""The Redis client every part of faas-infer uses: each request bounded by a socket timeout, none retried.

redis-py retries a request that timed out or lost its connection three times with back-off by default:
one read of a Redis that hangs then took 9 s instead of the timeout, and a retried push or pop can run
twice or lose a reply. Callers here decide themselves what a failed request means (Redis lost, a job
failed), so the client never retries.
"""

from __future__ import annotations

from typing import Any


def bounded_client(url: str, timeout: float, connect_timeout: float | None = None, **kwargs: Any) -> Any:
    """A ``redis.Redis`` for ``url`` whose requests take at most ``timeout`` seconds (connecting at most
    ``connect_timeout``, default ``timeout``) and are never retried; ``kwargs`` go to the client."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=timeout,
                                socket_connect_timeout=timeout if connect_timeout is None else connect_timeout,
                                retry=Retry(NoBackoff(), 0), **kwargs)
