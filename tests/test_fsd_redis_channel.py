"""The Redis queue channel: framing, packing, metering, clean-up (against a real Redis)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fsd.channel import Message
from fsd.errors import ChannelError, ChannelTimeout, JobAborted
from fsd.partition import COORDINATOR
from fsd.redis_channel import RedisQueueChannel, billed, frames, inbox_key, parse_frame
from helpers import RedisServer, free_port


def test_frames_split_and_reassemble():
    data = bytes(range(256)) * 10
    parts = frames(Message(1, 3, 2, data), max_bytes=1000)
    assert len(parts) == 3
    decoded = [parse_frame(f) for f in parts]
    assert [(l, s, i, n) for l, s, i, n, _ in decoded] == [(3, 2, 0, 3), (3, 2, 1, 3), (3, 2, 2, 3)]
    assert b"".join(p for *_, p in decoded) == data
    assert len(frames(Message(1, 3, 2, b""), 1000)) == 1
    assert billed(1) == 1 and billed(64 * 1024) == 1 and billed(64 * 1024 + 1) == 2


def test_blocks_arrive_out_of_order_and_are_buffered(redis_server, redis_client):
    channel = RedisQueueChannel.from_url(redis_server.url, max_message_bytes=1024)
    a, b = channel.endpoint("j", 0), channel.endpoint("j", 2)
    a.send([Message(1, 5, 0, b"x" * 3000)])            # a later layer first, in 3 frames
    b.send([Message(1, 4, 2, b"y" * 10)])
    assert redis_client.ttl(inbox_key("j", 1)) > 0  # a failed job's inbox expires by itself
    me = channel.endpoint("j", 1)
    assert me.receive(4, [2], time.monotonic() + 1) == {2: b"y" * 10}
    assert me.receive(5, [0], time.monotonic() + 1) == {0: b"x" * 3000}
    assert a.usage().messages == 1 and a.usage().bytes == 3000 and a.usage().requests == {"send": 3}
    channel.endpoint("j", COORDINATOR).send([Message(COORDINATOR, 9, 1, b"z")])
    assert channel.purge("j", [0, 1, 2, COORDINATOR]).requests == {"delete": 4}
    assert not redis_client.keys("fsd:*")


def test_abort_wakes_a_waiting_rank_and_stops_a_late_one(redis_server, redis_client):
    channel = RedisQueueChannel.from_url(redis_server.url)
    waiting = channel.endpoint("j", 0)
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(waiting.receive, 3, [1], time.monotonic() + 30)
        time.sleep(0.2)
        started = time.monotonic()
        channel.abort("j", [0, 1], "WorkerFailed: rank 2 died")
        with pytest.raises(JobAborted, match=r"rank 0: job j was aborted by the coordinator \(WorkerFailed: rank 2"):
            blocked.result(timeout=10)
    assert time.monotonic() - started < 5  # not the 30 s deadline
    assert redis_client.ttl(inbox_key("j", 1)) > 0  # the marker expires if nobody reads it
    with pytest.raises(JobAborted, match="rank 1: job j was aborted"):  # a rank that starts after the abort
        channel.endpoint("j", 1).receive(1, [COORDINATOR], time.monotonic() + 30)


def test_no_send_after_the_endpoints_deadline(redis_server, redis_client):
    channel = RedisQueueChannel.from_url(redis_server.url)
    with pytest.raises(ChannelTimeout, match="rank 0: job j passed its deadline before layer-2"):
        channel.endpoint("j", 0, time.monotonic() - 0.01).send([Message(1, 2, 0, b"x")])
    assert not redis_client.keys("fsd:*")


@pytest.fixture
def frozen_redis():
    """A private redis-server that stops answering (SIGSTOP) once the test has connected."""
    server = RedisServer(free_port()).start()
    yield server
    server.proc.send_signal(signal.SIGCONT)
    server.stop()


def test_a_redis_that_stops_answering_fails_requests_within_the_request_timeout(frozen_redis):
    channel = RedisQueueChannel.from_url(frozen_redis.url, request_timeout=0.5)
    channel.endpoint("j", 0).send([Message(1, 2, 0, b"x")])  # connected and healthy
    frozen_redis.proc.send_signal(signal.SIGSTOP)
    for attempt in (lambda: channel.endpoint("j", 0).send([Message(1, 2, 0, b"x")]),
                    lambda: channel.endpoint("j", 1).receive(3, [0], time.monotonic() + 1.0)):
        started = time.monotonic()
        with pytest.raises(ChannelError, match="redis: rank"):
            attempt()
        assert time.monotonic() - started < 4  # 0.5 s a request, no retries (redis-py's default: 5 s, 3 retries)


def test_errors_name_the_coordinator_as_such():
    # The coordinator's errors read 'redis: rank -1 cannot send in job ...' (answered to the client).
    channel = RedisQueueChannel.from_url(f"redis://127.0.0.1:{free_port()}/0", request_timeout=0.5)  # nothing there
    with pytest.raises(ChannelError, match="^redis: coordinator cannot send in job j: "):
        channel.endpoint("j", COORDINATOR).send([Message(0, 1, COORDINATOR, b"x")])
    with pytest.raises(ChannelError, match="^redis: coordinator cannot receive in job j: "):
        channel.endpoint("j", COORDINATOR).receive(3, [0], time.monotonic() + 1.0)
    with pytest.raises(ChannelTimeout, match="^coordinator: job j passed its deadline before layer-1"):
        channel.endpoint("j", COORDINATOR, time.monotonic() - 0.01).send([Message(0, 1, COORDINATOR, b"x")])


@pytest.mark.parametrize("frame", [b"", b"\x00\x00", b"\x00\x00\x00\x05[1,2]", b"\x00\x00\x00\x02{}",
                                   b"\x00\x00\x00\x04null", b'\x00\x00\x00\x19{"l":1,"s":0,"i":3,"n":2}'])
def test_what_is_not_a_frame_is_a_channel_error(frame):
    with pytest.raises(ChannelError, match=f"a malformed frame of {len(frame)} bytes"):
        parse_frame(frame)
