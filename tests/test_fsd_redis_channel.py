"""The Redis queue channel: framing, packing, metering, clean-up (against a real Redis)."""

from __future__ import annotations

import time

from fsd.channel import Message
from fsd.partition import COORDINATOR
from fsd.redis_channel import RedisQueueChannel, billed, frames, inbox_key, parse_frame


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
