"""Requests put on the asyncio engine's event loop are pushed to the shared queue from that loop (a real
redis-server, a real event loop on its own thread): one LPUSH per loop turn, the right database, and no
request lost when Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from batcher import keys
from batcher.policy import BatchConfig, ExecTimeModel
from batcher.redis_queue import RedisBatchQueue
from batcher.request import Request, Response
from batcher.worker import BatchWorker
from helpers import RedisServer, free_port, wait_until

FN = "fn"


class LoopThread:
    """An asyncio event loop running on a thread of its own, like the engine's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn, *args):
        """``fn(*args)`` on the loop's thread; its result."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread():
    runner = LoopThread()
    yield runner
    runner.stop()


def started(url: str, inst: str, loop_thread: LoopThread, **kw) -> RedisBatchQueue:
    queue = RedisBatchQueue(url, FN, inst, BatchConfig(8), **kw).start()
    loop_thread.call(queue.use_loop, loop_thread.loop)
    wait_until(lambda: queue._pusher is not None and queue._pusher._transport is not None, 5,
               what="loop connection to Redis")
    return queue


def put_many(loop_thread: LoopThread, queue: RedisBatchQueue, bodies: list[bytes]) -> list:
    """Put every body on the loop in one turn, as the engine does for requests parsed together."""
    return loop_thread.call(lambda: [queue.put(Request(body=b), time.monotonic() + 20) for b in bodies])


def lpush_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def test_requests_put_in_one_loop_turn_go_out_in_one_push(redis_server, redis_client, loop_thread):
    queue = started(redis_server.url, "a", loop_thread)
    try:
        before = lpush_calls(redis_client)
        futures = put_many(loop_thread, queue, [str(i).encode() for i in range(10)])
        wait_until(lambda: redis_client.llen(keys.queue(FN)) == 10, 2, what="requests pushed")
        assert lpush_calls(redis_client) - before == 1
        items = queue.next_batch(10, 0.0, 0.5)
        for item in items:
            item.future.set_result(Response(item.request.body * 2))
        assert [f.result(2).body for f in futures] == [str(i).encode() * 2 for i in range(10)]
    finally:
        queue.leave()


def test_the_loop_pushes_to_the_database_of_the_url(redis_server, redis_client, loop_thread):
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    queue = started(url, "a", loop_thread)
    try:
        put_many(loop_thread, queue, [b"x"])
        other = redis.Redis.from_url(url)
        wait_until(lambda: other.llen(keys.queue(FN)) == 1, 2, what="request pushed to db 3")
        assert redis_client.llen(keys.queue(FN)) == 0
    finally:
        queue.leave()


def test_losing_redis_while_the_loop_pushes_loses_no_request(loop_thread):
    server = RedisServer(free_port()).start()
    states: list[bool] = []
    queue = worker = None
    try:
        queue = started(server.url, "a", loop_thread, on_redis_state=states.append)
        before = put_many(loop_thread, queue, [b"q"] * 5)
        server.stop()
        during = put_many(loop_thread, queue, [b"d"] * 5)
        wait_until(lambda: states[-1] is False, 5, what="loss noticed")
        worker = BatchWorker(queue, lambda rs: [Response(r.body * 2) for r in rs], queue.live_config,
                             ExecTimeModel(), poll=0.05).start()
        assert [f.result(10).body for f in before + during] == [b"qq"] * 5 + [b"dd"] * 5
        server.start()
        wait_until(lambda: states[-1] is True, 10, what="reconnected")
        wait_until(lambda: queue._pusher._transport is not None, 5, what="loop connection again")
        after = put_many(loop_thread, queue, [b"s"] * 3)
        assert [f.result(10).body for f in after] == [b"ss"] * 3
        client = redis.Redis.from_url(server.url)
        wait_until(lambda: client.hget(keys.stats(FN), "served") == b"3", 5, what="served through Redis again")
    finally:
        if worker is not None:
            worker.stop(5)
        if queue is not None:
            queue.leave()
        server.stop()
