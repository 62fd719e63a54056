"""The object-storage channel: one S3 object per (layer, source, destination) block.

As in FSD-Inference's S3 channel, a sender PUTs each packed block as an object named
``<prefix><job>/<layer>/<src>-<dst>`` and the receiver polls GET on the names it expects (a miss is a 404
that is still billed) with a short backoff, then DELETEs what it read: a job whose messages all arrived
leaves nothing, whoever dies afterwards. The coordinator LISTs and DELETEs what is left at the end of a job
(after a failure: blocks nobody read). What a coordinator that died mid-job leaves (its ranks' outputs,
or blocks its failed ranks never read) is swept by the next coordinator to start: job ids begin with the
job's expiry (epoch seconds), so ``sweep`` deletes the jobs that expired, whoever ran them. A bucket
lifecycle rule on the prefix is the backstop (fsd/README.md).

Aborting a job PUTs ``<prefix><job>/abort``; a rank that has waited ``abort_check`` seconds without getting
all it needs GETs it between polls (one GET per ``abort_check``, so healthy jobs pay next to nothing), and
the clean-up's LIST + DELETE removes it with the rest. With a deadline, every request is bounded by the time
left before it.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Collection, Sequence

from fsd.channel import Message, Meter, Usage, aborted_text, missing_text, rank_name
from fsd.errors import ChannelError, ChannelTimeout, JobAborted
from fsd.s3_client import S3Client

logger = logging.getLogger(__name__)


def object_key(prefix: str, job: str, layer: int, src: int, dst: int) -> str:
    """Name of one block's object."""
    return f"{prefix}{job}/{layer}/{rank_name(src)}-{rank_name(dst)}"


_JOB_ID = re.compile(r"^(\d{9,11})-[0-9a-f]{32}$")


def job_expiry(job: str) -> float | None:
    """The expiry (epoch seconds) a job id starts with (``<expires>-<uuid4 hex>``), None for other names
    (so nothing else under the prefix is ever swept)."""
    match = _JOB_ID.match(job)
    return float(match.group(1)) if match else None


def abort_key(prefix: str, job: str) -> str:
    """Name of the object that marks ``job`` aborted (its body is the reason)."""
    return f"{prefix}{job}/abort"


class S3Channel:
    """Blocks as objects in one bucket."""

    kind = "s3"

    def __init__(self, client: S3Client, bucket: str, prefix: str = "fsd/", poll_start: float = 0.002,
                 poll_max: float = 0.05, abort_check: float = 0.25) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.poll_start, self.poll_max = poll_start, poll_max
        # Seconds a rank waits between looks at the job's abort marker.
        self.abort_check = abort_check

    def endpoint(self, job: str, rank: int, deadline: float | None = None) -> "S3Endpoint":
        """The endpoint of ``rank`` in ``job``; no request outlives ``deadline``."""
        return S3Endpoint(self, job, rank, deadline)

    def abort(self, job: str, ranks: Collection[int], reason: str) -> None:
        """PUT the job's abort marker (one for every rank)."""
        self.client.put(self.bucket, abort_key(self.prefix, job), reason.encode())

    def purge(self, job: str, ranks: Collection[int]) -> Usage:
        """LIST the job's objects and DELETE each."""
        keys, lists = self.client.list(self.bucket, f"{self.prefix}{job}/")
        for key in keys:
            self.client.delete(self.bucket, key)
        return Usage(requests={"list": lists, "delete": len(keys)})

    def sweep(self, before: float) -> Usage:
        """DELETE the objects of every job that expired before ``before`` (epoch seconds): what jobs whose
        coordinator died left behind. Objects not named like a job's are left alone."""
        keys, lists = self.client.list(self.bucket, self.prefix)
        stale = [k for k in keys if (job_expiry(k[len(self.prefix):].split("/", 1)[0]) or before) < before]
        for key in stale:
            self.client.delete(self.bucket, key)
        return Usage(requests={"list": lists, "delete": len(stale)})


class S3Endpoint:
    """PUT to send, polling GET to receive."""

    def __init__(self, channel: S3Channel, job: str, rank: int, deadline: float | None = None) -> None:
        self.channel, self.job, self.rank, self.deadline = channel, job, rank, deadline
        self.meter = Meter()
        self._got: dict[tuple[int, int], bytes] = {}
        self._abort_checked = time.monotonic()

    def _left(self) -> float | None:
        """Seconds a request may take: the time left before the deadline (None: the client's own limit)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _key(self, layer: int, src: int, dst: int) -> str:
        return object_key(self.channel.prefix, self.job, layer, src, dst)

    def send(self, messages: Sequence[Message]) -> None:
        """PUT one object per message."""
        for m in messages:
            self.channel.client.put(self.channel.bucket, self._key(m.layer, m.src, m.dst), m.data, self._left())
            self.meter.request("put")
            self.meter.sent(1, len(m.data))

    def receive(self, layer: int, sources: Collection[int], deadline: float) -> dict[int, bytes]:
        """GET every expected object, polling the missing ones until ``deadline``."""
        wanted = set(sources)
        wait = self.channel.poll_start
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        while True:
            for src in sorted(s for s in wanted if (layer, s) not in self._got):
                if time.monotonic() >= deadline:
                    break  # no time left for a request: name what is missing instead
                key = self._key(layer, src, self.rank)
                data = self.channel.client.get(self.channel.bucket, key, self._left())
                self.meter.request("get")
                if data is not None:
                    self._got[(layer, src)] = data
                    self._forget(key)
            if all((layer, s) in self._got for s in wanted):
                return {s: self._got.pop((layer, s)) for s in wanted}
            if time.monotonic() >= deadline:
                raise ChannelTimeout(missing_text(layer, {s for s in wanted if (layer, s) not in self._got},
                                                  self.rank))
            self._check_abort()
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(wait * 2, self.channel.poll_max)

    def _forget(self, key: str) -> None:
        """Delete an object this rank has read, best effort: the block is in hand, so a failed delete (a
        503 SlowDown, no time left) must not fail the job; the coordinator's purge, the sweep and the
        bucket's lifecycle rule remove what is left."""
        left = self._left()
        if left is not None and left <= 0:
            return
        try:
            self.channel.client.delete(self.channel.bucket, key, left)
            self.meter.request("delete")
        except (ChannelError, ChannelTimeout) as exc:
            logger.debug("could not delete %s after reading it: %s", key, exc)

    def _check_abort(self) -> None:
        if time.monotonic() - self._abort_checked < self.channel.abort_check:
            return
        self._abort_checked = time.monotonic()
        reason = self.channel.client.get(self.channel.bucket, abort_key(self.channel.prefix, self.job), self._left())
        self.meter.request("get")
        if reason is not None:
            raise JobAborted(aborted_text(self.job, self.rank, reason.decode(errors="replace")))

    def usage(self) -> Usage:
        """What this endpoint did so far."""
        return self.meter.usage()
