"""The queue channel on Redis: one list per (job, rank) inbox, payloads packed into few messages.

Like FSD-Inference's SQS channel: a sender packs every value a peer needs from one layer into one message
(split into frames of at most ``max_message_bytes``, SQS's 256 KiB), pushes all of a layer's frames to all
inboxes in one pipelined round trip, and a receiver blocks on its inbox (BLPOP, then drains up to nine
more like an SQS batch receive). Requests are metered in SQS's billing unit, one per 64 KiB of payload.
Frames are bytes: a 4-byte big-endian header length, a JSON header, the payload. Inboxes expire after
``ttl`` seconds so a failed job leaves nothing behind for long.

Aborting a job pushes an abort frame (header ``{"abort": reason}``) to every rank's inbox: a rank blocked
on its inbox wakes at once, and one that starts the job later finds the frame first thing, at no cost to
healthy jobs. Every request is bounded by the client's socket timeout (``request_timeout``, set explicitly
by ``from_url`` and kept below FSD_TIMEOUT), a BLPOP slice by half of it, and redis-py's retries are off
(a retried RPUSH or LPOP would duplicate or lose frames).
"""

from __future__ import annotations

import json
import math
import struct
import time
from typing import Collection, Sequence

import redis

from faas_infer.redisclient import bounded_client
from fsd.channel import Message, Meter, Usage, aborted_text, missing_text, rank_name, who
from fsd.errors import ChannelError, ChannelTimeout, JobAborted

PREFIX = "fsd"
BILLING_CHUNK = 64 * 1024
# Connections beyond one per user: the coordinator, an abort and a clean-up running alongside.
_SPARE_CONNECTIONS = 8
_LEN = struct.Struct(">I")


def inbox_key(job: str, rank: int) -> str:
    """Redis key of ``rank``'s inbox in ``job``."""
    return f"{PREFIX}:{job}:inbox:{rank_name(rank)}"


def frames(message: Message, max_bytes: int) -> list[bytes]:
    """``message`` as wire frames of at most ``max_bytes`` payload each (at least one frame)."""
    data = message.data
    count = max(1, math.ceil(len(data) / max_bytes))
    out = []
    for i in range(count):
        header = json.dumps({"l": message.layer, "s": message.src, "i": i, "n": count}).encode()
        out.append(_LEN.pack(len(header)) + header + data[i * max_bytes:(i + 1) * max_bytes])
    return out


def abort_frame(reason: str) -> bytes:
    """The frame that tells an inbox's rank its job was aborted."""
    header = json.dumps({"abort": reason}).encode()
    return _LEN.pack(len(header)) + header


def parse_frame(frame: bytes) -> tuple[int, int, int, int, bytes]:
    """(layer, src, index, count, payload) of a frame; ``JobAborted`` (without a rank) for an abort frame,
    ``ChannelError`` for one that is not a frame (another program's push, another version's framing)."""
    try:
        (size,) = _LEN.unpack_from(frame)
        header = json.loads(frame[4:4 + size])
        if isinstance(header, dict) and "abort" in header:
            raise JobAborted(str(header["abort"]))
        layer, src, index, count = int(header["l"]), int(header["s"]), int(header["i"]), int(header["n"])
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise ChannelError(f"a malformed frame of {len(frame)} bytes ({type(exc).__name__}: {exc})") from None
    if not 0 <= index < count:
        raise ChannelError(f"a malformed frame of {len(frame)} bytes (part {index} of {count})")
    return layer, src, index, count, frame[4 + size:]


def billed(nbytes: int) -> int:
    """Requests SQS would bill for a payload of ``nbytes`` (one per started 64 KiB)."""
    return max(1, math.ceil(nbytes / BILLING_CHUNK))


class RedisQueueChannel:
    """Per-rank inboxes as Redis lists."""

    kind = "redis"

    def __init__(self, client: redis.Redis, max_message_bytes: int = 256 * 1024, ttl: int = 300,
                 request_timeout: float = 2.0) -> None:
        self.client = client
        self.max_message_bytes = max_message_bytes
        self.ttl = ttl
        # The client's socket timeout: the longest a request to a Redis that stopped answering takes.
        self.request_timeout = request_timeout

    @classmethod
    def from_url(cls, url: str, request_timeout: float = 2.0, users: int = 0, **kwargs) -> "RedisQueueChannel":
        """A channel on the Redis at ``url``; no request to it takes longer than ``request_timeout``. The
        client's connection pool holds ``users`` threads' connections (0: redis-py's default, 100), each
        rank blocking on its inbox holds one: the in-process bench's W workers share this one client."""
        pool = {"max_connections": users + _SPARE_CONNECTIONS} if users else {}
        client = bounded_client(url, request_timeout, **pool)
        return cls(client, request_timeout=request_timeout, **kwargs)

    def endpoint(self, job: str, rank: int, deadline: float | None = None) -> "RedisEndpoint":
        """The inbox endpoint of ``rank`` in ``job``; it sends nothing after ``deadline``."""
        return RedisEndpoint(self, job, rank, deadline)

    def abort(self, job: str, ranks: Collection[int], reason: str) -> None:
        """Push an abort frame to the inbox of every rank in ``ranks``."""
        pipe = self.client.pipeline(transaction=False)
        for rank in ranks:
            pipe.rpush(inbox_key(job, rank), abort_frame(reason))
            pipe.expire(inbox_key(job, rank), self.ttl)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise ChannelError(f"redis: cannot abort job {job}: {exc}") from None

    def sweep(self, before: float) -> Usage:
        """Nothing to do: the inboxes of jobs whose coordinator died expire by themselves (``ttl``)."""
        return Usage()

    def purge(self, job: str, ranks: Collection[int]) -> Usage:
        """Delete the job's inboxes."""
        try:
            self.client.delete(*[inbox_key(job, r) for r in ranks])
        except redis.RedisError as exc:
            raise ChannelError(f"redis: cannot delete the inboxes of job {job}: {exc}") from None
        return Usage(requests={"delete": len(ranks)})


class RedisEndpoint:
    """Sends by pipelined RPUSH, receives by BLPOP on its own inbox."""

    def __init__(self, channel: RedisQueueChannel, job: str, rank: int, deadline: float | None = None) -> None:
        self.channel, self.job, self.rank, self.deadline = channel, job, rank, deadline
        self.meter = Meter()
        self._parts: dict[tuple[int, int], list[bytes | None]] = {}

    def send(self, messages: Sequence[Message]) -> None:
        """Push every message's frames to its destination's inbox in one round trip."""
        if not messages:
            return
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise ChannelTimeout(f"{who(self.rank)}: job {self.job} passed its deadline before "
                                 f"layer-{messages[0].layer} activations could be sent")
        pipe = self.channel.client.pipeline(transaction=False)
        keys = set()
        for message in messages:
            key = inbox_key(self.job, message.dst)
            keys.add(key)
            for frame in frames(message, self.channel.max_message_bytes):
                pipe.rpush(key, frame)
                self.meter.request("send", billed(len(frame)))
            self.meter.sent(1, len(message.data))
        for key in keys:
            pipe.expire(key, self.channel.ttl)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise ChannelError(f"redis: {who(self.rank)} cannot send in job {self.job}: {exc}") from None

    def receive(self, layer: int, sources: Collection[int], deadline: float) -> dict[int, bytes]:
        """Pop frames until every (layer, source) block is complete, or raise at ``deadline``."""
        wanted = set(sources)
        key = inbox_key(self.job, self.rank)
        while True:
            done = {s: self._complete(layer, s) for s in wanted}
            if all(v is not None for v in done.values()):
                for s in wanted:
                    del self._parts[(layer, s)]
                return done  # type: ignore[return-value]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [s for s, v in done.items() if v is None]
                raise ChannelTimeout(missing_text(layer, missing, self.rank))
            self._pop(key, min(remaining, 1.0, self.channel.request_timeout / 2))

    def _pop(self, key: str, timeout: float) -> None:
        try:
            first = self.channel.client.blpop([key], timeout=max(timeout, 0.01))
            batch = [first[1]] if first else []
            if first:
                batch += self.channel.client.lpop(key, 9) or []
        except redis.RedisError as exc:
            raise ChannelError(f"redis: {who(self.rank)} cannot receive in job {self.job}: {exc}") from None
        self.meter.request("receive", billed(sum(len(f) for f in batch)))
        for frame in batch:
            try:
                l, s, i, n, payload = parse_frame(frame)
            except JobAborted as exc:
                raise JobAborted(aborted_text(self.job, self.rank, str(exc))) from None
            except ChannelError as exc:
                raise ChannelError(f"redis: {who(self.rank)} received {exc} in job {self.job}") from None
            parts = self._parts.setdefault((l, s), [None] * n)
            parts[i] = payload

    def _complete(self, layer: int, src: int) -> bytes | None:
        parts = self._parts.get((layer, src))
        if parts is None or any(p is None for p in parts):
            return None
        return b"".join(parts)  # type: ignore[arg-type]

    def usage(self) -> Usage:
        """What this endpoint did so far."""
        return self.meter.usage()
