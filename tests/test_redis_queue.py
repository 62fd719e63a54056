"""The Redis batch queue against a real redis-server: sharing, reclaiming, deadlines, live config, Redis loss."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
import redis

from batcher import host, keys, stats, wire
from batcher.errors import DeadlineExceeded, PayloadTooLarge
from batcher.policy import BatchConfig, ExecTimeModel
from batcher.redis_queue import RedisBatchQueue
from batcher.request import Request, Response
from batcher.worker import BatchWorker
from helpers import RedisServer, free_port, wait_until

FN = "fn"


@pytest.fixture
def queues(redis_client, redis_server):
    """Factory: ``queues(inst, max_batch_size=8, url=None)`` makes a started queue; all leave at the end."""
    made: list[RedisBatchQueue] = []

    def make(inst: str, max_batch_size: int = 8, url: str | None = None, **kw) -> RedisBatchQueue:
        queue = RedisBatchQueue(url or redis_server.url, FN, inst, BatchConfig(max_batch_size), **kw).start()
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.leave()


def serve(queue: RedisBatchQueue, calls: list | None = None) -> BatchWorker:
    """A real batch worker on ``queue`` whose handler doubles each body."""
    def handle(requests):
        if calls is not None:
            calls.append(len(requests))
        return [Response(r.body * 2) for r in requests]

    return BatchWorker(queue, handle, queue.live_config, ExecTimeModel(), poll=0.05).start()


def deadline(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_a_request_put_on_one_instance_is_answered_by_another(queues, redis_client):
    a, b = queues("a"), queues("b")
    futures = [a.put(Request(body=str(i).encode()), deadline()) for i in range(5)]
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 5, 2, what="requests pushed")
    worker = serve(b)
    answers = [f.result(5) for f in futures]
    assert [r.body for r in answers] == [str(i).encode() * 2 for i in range(5)]
    assert {r.headers["X-Served-By"] for r in answers} == {"b"}
    assert redis_client.llen(keys.claimed(FN, "b")) == 0
    assert int(redis_client.hget(keys.stats(FN), "served")) == 5
    worker.stop(5)


def test_a_batch_waits_for_its_timeout_then_takes_what_is_there(queues):
    a = queues("a")
    futures = [a.put(Request(body=b"x"), deadline()) for _ in range(3)]
    items = a.next_batch(8, 0.05, 0.5)
    assert len(items) == 3
    for item in items:
        item.future.set_result(Response(b"ok"))
    assert [f.result(2).body for f in futures] == [b"ok"] * 3


def test_a_reply_delivered_twice_resolves_once(queues, redis_client):
    a = queues("a")
    future = a.put(Request(body=b"x"), deadline())
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 1, 2, what="request pushed")
    env = wire.decode_request(redis_client.lindex(keys.queue(FN), -1))
    for body in (b"first", b"second"):
        redis_client.lpush(keys.inbox("a"), wire.encode_reply(wire.Reply(env.token, Response(body), "z")))
    assert future.result(5).body == b"first"
    wait_until(lambda: redis_client.llen(keys.inbox("a")) == 0, 5, what="second reply consumed")
    assert future.result().body == b"first"


def test_an_expired_request_is_answered_504_and_not_run(queues, redis_client):
    a = queues("a")
    future = a.put(Request(body=b"late"), deadline(0.05))
    time.sleep(0.1)
    calls: list[int] = []
    worker = serve(queues("b"), calls)
    with pytest.raises(DeadlineExceeded):
        future.result(5)
    wait_until(lambda: redis_client.hget(keys.stats(FN), "expired") == b"1", 5, what="expired counted")
    assert calls == []
    worker.stop(5)


def test_requests_claimed_by_a_dead_instance_are_reclaimed_and_run(queues, redis_client):
    a = queues("a")
    futures = [a.put(Request(body=b"r"), deadline(10)) for _ in range(3)]
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 3, 2, what="requests pushed")
    for _ in range(3):  # "dead" took them, then stopped beating long ago
        redis_client.lmove(keys.queue(FN), keys.claimed(FN, "dead"), "RIGHT", "LEFT")
    redis_client.zadd(keys.instances(FN), {"dead": time.time() - 60})
    worker = serve(a)
    assert [f.result(10).body for f in futures] == [b"rr"] * 3
    assert redis_client.zscore(keys.instances(FN), "dead") is None
    assert redis_client.exists(keys.claimed(FN, "dead")) == 0
    assert int(redis_client.hget(keys.stats(FN), "reclaimed")) == 3
    worker.stop(5)


def test_a_request_is_given_back_once_and_its_caller_answered_when_a_second_taker_dies(queues, redis_client):
    # A request that kills whoever runs it must not take down every replica until its deadline.
    a = queues("a")
    future = a.put(Request(body=b"poison"), deadline(20))
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 1, 2, what="request pushed")
    for taker in ("dead1", "dead2"):
        redis_client.lmove(keys.queue(FN), keys.claimed(FN, taker), "RIGHT", "LEFT")
        redis_client.zadd(keys.instances(FN), {taker: time.time() - 60})
        wait_until(lambda: redis_client.zscore(keys.instances(FN), taker) is None, 5, what=f"{taker} reaped")
    error = future.exception(10)
    assert error is not None and error.status == 500 and "stopped (crashed or killed) twice" in str(error)
    assert redis_client.llen(keys.queue(FN)) == 0
    assert int(redis_client.hget(keys.stats(FN), "reclaimed")) == 1
    assert int(redis_client.hget(keys.stats(FN), "dropped")) == 1


def test_a_request_whose_caller_died_with_its_taker_is_dropped(queues, redis_client):
    a = queues("a")
    mine = wire.Envelope("tok1", "dead", time.time() + 20, time.time(), Request(body=b"orphan"))
    redis_client.lpush(keys.claimed(FN, "dead"), wire.encode_request(mine))
    redis_client.zadd(keys.instances(FN), {"dead": time.time() - 60})
    wait_until(lambda: redis_client.zscore(keys.instances(FN), "dead") is None, 5, what="dead reaped")
    assert redis_client.llen(keys.queue(FN)) == 0
    assert int(redis_client.hget(keys.stats(FN), "dropped")) == 1
    assert a.depth() == 0


def test_reaping_drops_claimed_items_it_cannot_read_and_still_removes_the_instance(queues, redis_client):
    a = queues("a")
    for item in (b"tok1\n{\"r\": null}\nbody", b"tok2\n{\"r\": true}\n", b"no newline at all", b"tok3\n[1]\n"):
        redis_client.lpush(keys.claimed(FN, "dead"), item)
    redis_client.zadd(keys.instances(FN), {"dead": time.time() - 60})
    wait_until(lambda: redis_client.zscore(keys.instances(FN), "dead") is None, 5, what="dead reaped")
    assert redis_client.llen(keys.claimed(FN, "dead")) == 0 and redis_client.llen(keys.queue(FN)) == 0
    assert int(redis_client.hget(keys.stats(FN), "dropped")) == 4
    assert a.depth() == 0


def plant(pipe, inst: str, beat: float, facts: dict[str, str]) -> None:
    """Write into ``pipe`` a peer as a killed one leaves Redis: its last beat, its facts, one request of its
    own callers queued and one claimed."""
    pipe.zadd(keys.instances(FN), {inst: beat})
    pipe.hset(keys.instance(FN, inst), mapping={**host.identity(), **facts})
    for key, token in ((keys.queue(FN), "queued"), (keys.claimed(FN, inst), "claimed")):
        pipe.lpush(key, wire.encode_request(wire.Envelope(f"{inst}{token}", inst, time.time() + 20, time.time(),
                                                          Request(body=b"orphan"))))


def ended_pid() -> int:
    """The pid of a process that ran and was waited for: no process has it."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return ended.pid


@pytest.fixture
def sleeper():
    """A process that runs until the test ends."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait()


@pytest.mark.parametrize("process, reaped", [("gone", True), ("reused", True), ("its own", False),
                                             ("elsewhere", False), ("another machine of this name", False),
                                             ("its own, the clock set forward since", False)])
def test_a_starting_instance_first_reaps_a_peer_on_its_host_whose_process_is_gone(queues, redis_client, process,
                                                                                   reaped, sleeper):
    # Killed with SIGKILL and restarted within stale_after (the provider's backoff is 0.5 s), the next instance
    # took the dead one's queued requests, whose callers died with it, and ran them for nobody.
    live = {"pid": str(sleeper.pid), "pid_start": str(host.start_ticks(sleeper.pid))}
    facts = {"gone": {"pid": str(ended_pid()), "pid_start": host.own_start(), "started_at": repr(time.time())},
             "reused": {**live, "pid_start": str(max(0, host.start_ticks(sleeper.pid) - 6000))},
             "its own": {**live, "started_at": repr(time.time())},
             "elsewhere": {"host": "elsewhere", "pid": str(ended_pid()), "pid_start": "1",
                           "started_at": repr(time.time())},
             # A live instance on a VM made from the same image: same hostname, and in its kernel's first pid
             # namespace, named as ours is; only the boot id tells the kernels apart.
             "another machine of this name": {"boot_id": "0b6a3f4e-7d21-4c8e-b1f2-9e4d5a6c7b80",
                                              "pid": str(ended_pid()), "pid_start": "1",
                                              "started_at": repr(time.time())},
             # Its started_at stamped before the clock was set 30 s forward (NTP's first step on a fresh VM, an
             # operator's date -s): by the clock now, its process seems to have started 30 s after it did.
             "its own, the clock set forward since": {**live, "started_at": repr(time.time() - 30)},
             }[process]
    pipe = redis_client.pipeline(transaction=True)
    plant(pipe, "dead", time.time(), facts)
    pipe.execute()
    queues("a")  # started: its first beat is done, and it took nothing yet
    assert (redis_client.zscore(keys.instances(FN), "dead") is None) is reaped
    assert redis_client.llen(keys.queue(FN)) == (0 if reaped else 1)
    assert redis_client.llen(keys.claimed(FN, "dead")) == (0 if reaped else 1)
    assert int(redis_client.hget(keys.stats(FN), "dropped") or 0) == (2 if reaped else 0)


@pytest.mark.parametrize("former", ["gone", "alive"])
def test_a_restarted_process_of_an_instance_drops_the_queued_requests_of_its_former_one_only_when_that_is_gone(
        queues, redis_client, sleeper, former):
    # gunicorn restarts a dead worker under the watchdog's instance id: its predecessor's queued requests,
    # whose callers died with it, were all run for nobody. One still alive (a HUP's old worker, draining)
    # still has its callers.
    pid = {"gone": str(ended_pid()), "alive": str(sleeper.pid)}[former]
    pid_start = host.start_ticks(sleeper.pid)
    pipe = redis_client.pipeline(transaction=True)
    plant(pipe, "a", time.time(), {"pid": pid, "pid_start": str(pid_start), "started_at": repr(time.time())})
    pipe.lpush(keys.claimed(FN, "a"), wire.encode_request(wire.Envelope("other", "b", time.time() + 20, time.time(),
                                                                        Request(body=b"live caller"))))
    pipe.execute()
    queues("a")
    left = [wire.decode_request(item).token for item in redis_client.lrange(keys.queue(FN), 0, -1)]
    if former == "gone":
        assert left == ["other"]  # another front end's caller waits: given back; the two orphans dropped
        assert int(redis_client.hget(keys.stats(FN), "dropped")) == 2
    else:
        assert sorted(left) == ["aqueued", "other"]  # as before: only its own claim dropped (give_back_own)
    assert redis_client.hget(keys.instance(FN, "a"), "pid") == str(os.getpid()).encode()


def test_a_peer_on_this_host_whose_process_is_gone_is_reaped_by_a_heartbeat_before_it_is_stale(queues, redis_client):
    queues("a", stale_after=60)  # the heartbeat rule would wait a minute
    pipe = redis_client.pipeline(transaction=True)  # both seen by the same beat
    plant(pipe, "remote", time.time() - 5, {"host": "elsewhere", "pid": str(ended_pid()), "pid_start": "1",
                                            "started_at": repr(time.time())})
    plant(pipe, "dead", time.time() - 5, {"pid": str(ended_pid()), "pid_start": "1", "started_at": repr(time.time())})
    pipe.execute()
    wait_until(lambda: redis_client.zscore(keys.instances(FN), "dead") is None, 5, what="dead reaped")
    assert redis_client.zscore(keys.instances(FN), "remote") is not None  # another host: left to the heartbeat rule
    assert redis_client.llen(keys.claimed(FN, "remote")) == 1 and redis_client.llen(keys.queue(FN)) == 1


def test_a_body_over_the_limit_is_refused_with_413(queues):
    a = queues("a", max_bytes=10)
    with pytest.raises(PayloadTooLarge) as info:
        a.put(Request(body=b"x" * 11), deadline())
    assert info.value.status == 413


def test_live_config_applies_within_a_second_and_bad_values_are_ignored(queues, redis_client):
    a = queues("a", max_batch_size=4)
    assert a.live_config().max_batch_size == 4
    redis_client.hset(keys.config(FN, "a"), mapping={"max_batch_size": "16", "batch_timeout": "0.01"})
    wait_until(lambda: a.live_config() == BatchConfig(16, 0.01, None), 1.5, what="live config applied")
    redis_client.hset(keys.config(FN, "a"), "max_batch_size", "zero")
    time.sleep(1.1)
    assert a.live_config() == BatchConfig(16, 0.01, None)


def test_leaving_deregisters_and_gives_back_nothing_claimed(queues, redis_client):
    a = queues("a")
    wait_until(lambda: redis_client.zscore(keys.instances(FN), "a") is not None, 2, what="heartbeat")
    a.leave()
    assert redis_client.zscore(keys.instances(FN), "a") is None
    assert redis_client.exists(keys.instance(FN, "a")) == 0


def test_the_last_instance_to_leave_sets_its_functions_keys_to_expire_and_a_heartbeat_keeps_them(
        queues, redis_client):
    # A deleted function left its counters, arrivals and name in Redis forever.
    a, b = queues("a"), queues("b")
    worker = serve(b)
    assert a.put(Request(body=b"x"), deadline()).result(5).body == b"xx"
    wait_until(lambda: redis_client.hget(keys.stats(FN), "served") and redis_client.hlen(keys.arrivals(FN)), 3,
               what="counters and arrivals")
    a.leave()
    assert redis_client.ttl(keys.stats(FN)) == -1  # b still serves
    assert worker.stop(5)
    for key in (keys.stats(FN), keys.arrivals(FN)):
        assert 0 < redis_client.ttl(key) <= stats.IDLE_TTL, key
    assert not redis_client.sismember(keys.functions(), FN)
    queues("c")  # the function comes back (scale from zero) before they expire: they are kept
    for key in (keys.stats(FN), keys.arrivals(FN)):
        assert redis_client.ttl(key) == -1, key
    assert redis_client.sismember(keys.functions(), FN)


def test_the_last_instance_to_leave_retires_a_peer_that_stopped_beating_and_was_not_reaped_yet(queues, redis_client):
    # Its entry in the instances and its claimed list stayed forever: nobody was left to reap it.
    a = queues("a", stale_after=6000)  # its beats leave the peer be
    pipe = redis_client.pipeline(transaction=True)
    plant(pipe, "dead", time.time() - stats.RETIRE_AFTER - 10, {"host": "elsewhere", "pid": "1", "started_at": "0.0"})
    pipe.execute()
    a.leave()
    assert redis_client.exists(keys.instances(FN), keys.claimed(FN, "dead"), keys.instance(FN, "dead"),
                               keys.queue(FN)) == 0
    assert int(redis_client.hget(keys.stats(FN), "dropped")) == 2
    assert 0 < redis_client.ttl(keys.stats(FN)) <= stats.IDLE_TTL
    assert not redis_client.sismember(keys.functions(), FN)


def test_the_last_instance_to_leave_drops_nothing_of_a_peer_silent_for_seconds_and_keeps_it_listed(queues, redis_client):
    # Silent for 10 s (a stalled process, a clock behind) it may still live: its queue, claims and inbox are
    # not the leaver's to drop; the function stays listed so that the autoscaler's retire_dead finds it later.
    a = queues("a", stale_after=60)
    pipe = redis_client.pipeline(transaction=True)
    plant(pipe, "quiet", time.time() - 10, {"host": "elsewhere", "pid": "1", "started_at": "0.0"})
    pipe.execute()
    a.leave()
    assert redis_client.zrange(keys.instances(FN), 0, -1) == [b"quiet"]
    assert redis_client.llen(keys.claimed(FN, "quiet")) and redis_client.llen(keys.queue(FN))
    assert redis_client.hget(keys.stats(FN), "dropped") is None
    assert 0 < redis_client.ttl(keys.queue(FN)) <= stats.IDLE_TTL
    assert redis_client.sismember(keys.functions(), FN)


def test_a_stopped_worker_deregisters_its_instance(queues, redis_client):
    # The worker's threads end once nothing of theirs is left; the queue must still be told to leave.
    a = queues("a")
    worker = serve(a)
    assert a.put(Request(body=b"x"), deadline()).result(5).body == b"xx"
    wait_until(lambda: redis_client.zscore(keys.instances(FN), "a") is not None, 2, what="heartbeat")
    assert worker.stop(5)
    assert redis_client.zscore(keys.instances(FN), "a") is None
    assert redis_client.exists(keys.instance(FN, "a")) == 0


def test_live_config_refuses_values_that_are_not_finite(queues, redis_client):
    a = queues("a", max_batch_size=4)
    for field, value in (("batch_timeout", "inf"), ("batch_timeout", "nan"), ("latency_slo", "nan"),
                         ("latency_slo", "inf")):
        redis_client.hset(keys.config(FN, "a"), field, value)
        time.sleep(0.6)
        assert a.live_config() == BatchConfig(4), (field, value)
        redis_client.hdel(keys.config(FN, "a"), field)


def test_losing_redis_falls_back_to_local_and_returns_without_losing_requests(queues, tmp_path):
    server = RedisServer(free_port()).start()
    states: list[bool] = []
    try:
        a = queues("a", url=server.url, on_redis_state=states.append)
        assert states == [True]
        before = [a.put(Request(body=b"q"), deadline(20)) for _ in range(3)]
        server.stop()
        wait_until(lambda: states[-1] is False, 5, what="loss noticed")
        during = a.put(Request(body=b"d"), deadline(20))
        worker = serve(a)
        assert [f.result(10).body for f in before] == [b"qq"] * 3
        assert during.result(10).body == b"dd"
        server.start()
        wait_until(lambda: states[-1] is True, 10, what="reconnected")
        after = a.put(Request(body=b"s"), deadline(20))
        assert after.result(10).body == b"ss"
        client = redis.Redis.from_url(server.url)
        wait_until(lambda: client.hget(keys.stats(FN), "served") == b"1", 5, what="served through Redis again")
        worker.stop(5)
    finally:
        server.stop()


def test_a_request_moved_to_the_local_queue_on_a_loss_leaves_it_when_its_caller_gives_up(queues):
    # Requests waiting when Redis was lost move into the local queue; one whose caller then left (a client
    # gone, a timeout) stayed there, counted in depth: admission refused live callers as "queue full" for it.
    server = RedisServer(free_port()).start()
    states: list[bool] = []
    try:
        a = queues("a", url=server.url, on_redis_state=states.append)
        waiting = [a.put(Request(body=str(i).encode()), deadline(20)) for i in range(3)]
        server.stop()
        wait_until(lambda: states[-1] is False, 5, what="loss noticed")
        wait_until(lambda: a.depth() == 3, 5, what="the waiting requests moved to the local queue")
        assert waiting[1].cancel()  # as the watchdog does when the caller leaves
        assert a.depth() == 2
        assert [i.request.body for i in a.next_batch(8, 0.0, 0.5)] == [b"0", b"2"]
    finally:
        server.stop()


def test_requests_taken_back_by_their_own_instance_run_as_the_callers_waiters(queues, redis_client):
    a, b = queues("a"), queues("b")
    mine = [a.put(Request(body=b"a"), deadline()) for _ in range(2)]
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 2, 2, what="requests pushed")
    theirs = b.put(Request(body=b"b"), deadline())
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 3, 2, what="requests pushed")
    items = a.next_batch(8, 0.0, 0.5)
    assert len(items) == 3
    assert [item.future for item in items[:2]] == mine  # no copy, no hand-over
    assert items[2].future is not theirs
    for item in items:
        item.future.set_result(Response(item.request.body * 2))
    assert [f.result(2).body for f in mine] == [b"aa", b"aa"]  # the callers' own futures: answered at once
    assert not theirs.done()  # b's answer is routed when a's worker comes back for its next batch
    assert a.next_batch(8, 0.0, 0.05) == []
    assert theirs.result(5).body == b"bb"


def test_a_server_that_lost_its_scripts_gets_them_again_and_loses_nothing(queues, redis_client):
    a = queues("a")
    worker = serve(a)
    assert a.put(Request(body=b"1"), deadline()).result(5).body == b"11"
    redis_client.script_flush()
    futures = [a.put(Request(body=str(i).encode()), deadline()) for i in range(20)]
    assert [f.result(5).body for f in futures] == [str(i).encode() * 2 for i in range(20)]
    worker.stop(5)


def test_requests_run_without_the_queue_are_counted_as_arrivals_and_served(queues, redis_client):
    a = queues("a", beat_interval=0.05)
    wait_until(a.may_run_here, 2, what="shared queue in use")
    for _ in range(3):
        a.ran_here()
    wait_until(lambda: int(redis_client.hget(keys.instance(FN, "a"), "served") or 0) == 3, 2,
               what="served counted with the heartbeat")
    assert sum(int(v) for v in redis_client.hvals(keys.arrivals(FN))) == 3
    a.put(Request(body=b"x"), deadline())  # nobody takes it: the queue is not empty any more
    wait_until(lambda: not a.may_run_here(), 2, what="queue seen non-empty")


def test_refused_requests_are_counted_as_arrivals_and_refusals(queues, redis_client):
    a = queues("a", beat_interval=0.05)
    wait_until(lambda: a.up, 2, what="shared queue in use")
    for _ in range(4):
        a.refused()
    a.put(Request(body=b"x"), deadline())
    wait_until(lambda: stats.read_function_stats(redis_client, FN, time.time() + 1).counters["refused"] == 4, 2,
               what="refusals counted with the heartbeat")
    assert sum(int(v) for v in redis_client.hvals(keys.arrivals(FN))) == 5  # the autoscaler's demand
    assert sum(int(v) for v in redis_client.hvals(keys.refused(FN))) == 4  # and the part refused, by second
    rates = stats.read_function_stats(redis_client, FN, time.time() + 1, windows=(60,))
    assert rates.refusal_rate[60] == 4 / 60 and rates.arrival_rate[60] == 5 / 60


def _answer(items) -> None:
    for item in items:
        item.future.set_result(Response(item.request.body * 2))


def _queued(b: RedisBatchQueue, redis_client, n: int) -> list:
    """``n`` requests put on ``b`` (which runs nothing), once all are in the shared queue."""
    futures = [b.put(Request(body=str(i).encode()), deadline()) for i in range(n)]
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == n, 2, what="requests pushed")
    return futures


def _saturated(queues, redis_client):
    """Instance a with a batch of 4 taken from 12 queued by b (which runs nothing), and the next 4 taken ahead."""
    a, b = queues("a"), queues("b")
    futures = _queued(b, redis_client, 12)
    first = a.next_batch(4, 0.0, 0.5)  # 8 more wait: the next 4 are claimed at once, while this batch runs
    wait_until(lambda: redis_client.llen(keys.claimed(FN, "a")) == 8, 2, what="the take sent ahead")
    return a, b, futures, first


def test_a_saturated_instance_takes_its_next_batch_ahead_and_releases_only_the_batch_it_ran(queues, redis_client):
    a, _, futures, first = _saturated(queues, redis_client)
    assert [i.request.body for i in first] == [b"0", b"1", b"2", b"3"]
    assert redis_client.llen(keys.queue(FN)) == 4
    _answer(first)
    second = a.next_batch(4, 0.0, 0.5)
    assert [i.request.body for i in second] == [b"4", b"5", b"6", b"7"]
    _answer(second)
    third = a.next_batch(4, 0.0, 0.5)
    assert [i.request.body for i in third] == [b"8", b"9", b"10", b"11"]
    _answer(third)
    assert a.next_batch(4, 0.0, 0.05) == []  # the deferred releases went with this take
    assert redis_client.llen(keys.claimed(FN, "a")) == 0
    assert [f.result(5).body for f in futures] == [str(i).encode() * 2 for i in range(12)]
    wait_until(lambda: int(redis_client.hget(keys.stats(FN), "served") or 0) == 12, 2, what="served counted")


def test_no_take_is_sent_ahead_while_the_queue_holds_less_than_a_batch(queues, redis_client):
    a, b = queues("a"), queues("b")
    _queued(b, redis_client, 6)
    assert len(a.next_batch(4, 0.0, 0.5)) == 4
    assert redis_client.llen(keys.claimed(FN, "a")) == 4 and redis_client.llen(keys.queue(FN)) == 2


def test_a_batch_size_lowered_meanwhile_gives_the_surplus_taken_ahead_back_in_order(queues, redis_client):
    a, _, futures, first = _saturated(queues, redis_client)
    _answer(first)
    smaller = a.next_batch(2, 0.0, 0.5)
    assert [i.request.body for i in smaller] == [b"4", b"5"]
    # 6 and 7 went back, oldest nearest the taking end, and were taken ahead again (still saturated)
    def queued_bodies():
        return [wire.decode_request(m).request.body for m in reversed(redis_client.lrange(keys.queue(FN), 0, -1))]

    wait_until(lambda: queued_bodies() == [b"8", b"9", b"10", b"11"], 2, what="the queue's order")
    _answer(smaller)
    following = a.next_batch(2, 0.0, 0.5)
    assert [i.request.body for i in following] == [b"6", b"7"]
    _answer(following)
    worker = serve(a)
    assert [f.result(5).body for f in futures] == [str(i).encode() * 2 for i in range(12)]
    worker.stop(5)


def test_leaving_with_a_take_sent_ahead_gives_its_requests_back_to_be_run_elsewhere(queues, redis_client):
    a, b, futures, first = _saturated(queues, redis_client)
    _answer(first)
    a.close()
    assert a.next_batch(4, 0.0, 0.05) == []  # nothing of a's own waits: it leaves
    assert redis_client.llen(keys.claimed(FN, "a")) == 0 and redis_client.llen(keys.queue(FN)) == 8
    worker = serve(b)
    assert [f.result(5).body for f in futures] == [str(i).encode() * 2 for i in range(12)]
    worker.stop(5)


def test_a_push_written_before_a_take_came_back_does_not_overwrite_its_depth(queues):
    now = [10.0]
    queue = queues("a", clock=lambda: now[0], beat_interval=3600)  # one beat at start (read at 10.0), no more
    remote = queue._remote
    now[0] = 100.0
    remote.note_depth(1, pushed_at=99.0)  # a push's reply: the queue held 1 after it
    assert queue.depth() == 1
    remote.note_depth(0)  # a take's reply, read at 100.0: it took that request, the queue is empty
    remote.note_depth(1, pushed_at=99.5)  # the same push's reply arriving late (written before 100.0)
    assert queue.depth() == 0
    now[0] = 101.0
    remote.note_depth(3, pushed_at=100.5)  # written after the take's reply came back: newer, it counts
    assert queue.depth() == 3


def test_pipelined_batches_are_answered_and_released_oldest_first(queues, redis_client):
    # A pipelined worker holds two batches at once; the second may be answered first (a bisected first
    # batch runs its halves after it), yet the claimed list is trimmed only from the batch held longest.
    a, b = queues("a"), queues("b")
    futures = _queued(b, redis_client, 8)
    first = a.next_batch(4, 0.0, 0.5, not_before=None)
    second = a.next_batch(4, 0.0, 0.5)
    assert redis_client.llen(keys.claimed(FN, "a")) == 8
    _answer(second)
    a.batch_done()
    assert redis_client.llen(keys.claimed(FN, "a")) == 8  # the first still runs: nothing released
    assert not any(f.done() for f in futures)  # answers for b wait with their batch
    _answer(first)
    a.batch_done()
    assert [f.result(5).body for f in futures] == [str(i).encode() * 2 for i in range(8)]
    assert redis_client.llen(keys.claimed(FN, "a")) == 0


def test_a_pipelined_worker_on_the_shared_queue_answers_everything_and_releases_its_claims(queues,
                                                                                           redis_client):
    a, b = queues("a"), queues("b")
    futures = _queued(b, redis_client, 40)
    gate = threading.Event()

    def handle(requests):
        gate.wait(5)
        return [Response(r.body * 2) for r in requests]

    worker = BatchWorker(a, handle, a.live_config, ExecTimeModel(), poll=0.05, depth=2).start()
    wait_until(lambda: a._remote.open_batches() == 2, 5, what="two batches in flight")
    gate.set()
    assert [f.result(10).body for f in futures] == [str(i).encode() * 2 for i in range(40)]
    assert worker.stop(5)
    assert redis_client.llen(keys.claimed(FN, "a")) == 0


def _take_in_thread(queue: RedisBatchQueue, max_size: int, timeout: float, not_before=None):
    """Start ``queue.next_batch`` on a thread; returns (thread, {"items": ...} once it returned)."""
    got: dict = {}
    thread = threading.Thread(target=lambda: got.update(items=queue.next_batch(max_size, timeout, 0.5,
                                                                               not_before=not_before)))
    thread.start()
    return thread, got


def test_a_wait_for_company_longer_than_the_socket_timeout_is_made_of_shorter_ones(queues, redis_client):
    # A batch timeout (or a held-back take) past the client's socket timeout must not read as Redis lost:
    # that would move every waiting request to the local queue and run the claimed ones twice.
    states: list[bool] = []
    a, b = queues("a", socket_timeout=0.6, on_redis_state=states.append), queues("b")
    future = _queued(b, redis_client, 1)[0]
    items = a.next_batch(4, 1.5, 0.5)
    assert [i.request.body for i in items] == [b"0"]
    assert states == [True] and a.up
    _answer(items)
    a.batch_done()
    assert future.result(5).body == b"00"


def test_a_held_back_take_leaves_the_queue_to_an_idle_peer_and_is_released_when_the_batch_ahead_ends(
        queues, redis_client):
    # A pipelined taker waits until the batch in flight is predicted to end. Meanwhile it claims nothing, so
    # an idle peer runs what is queued; and a batch that ends early releases it at once, not when the stale
    # prediction says.
    a, b = queues("a"), queues("b")
    ahead = {"until": time.monotonic() + 60}  # the batch in flight, predicted to run another minute
    thread, got = _take_in_thread(a, 4, 0.0, not_before=lambda: ahead["until"])
    first = _queued(b, redis_client, 2)
    time.sleep(0.3)
    assert redis_client.llen(keys.claimed(FN, "a")) == 0 and "items" not in got  # held: nothing claimed
    peer = b.next_batch(4, 0.0, 0.5)  # an idle instance takes them
    assert [i.request.body for i in peer] == [b"0", b"1"]
    _answer(peer)
    b.batch_done()
    more = [b.put(Request(body=b"m"), deadline()) for _ in range(2)]
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 2, 2, what="more requests pushed")
    ahead["until"] = None  # the batch in flight ended early
    a.wake()
    thread.join(5)
    assert [i.request.body for i in got["items"]] == [b"m", b"m"]
    _answer(got["items"])
    a.batch_done()
    assert [f.result(5).body for f in first + more] == [b"00", b"11", b"mm", b"mm"]
    assert redis_client.llen(keys.claimed(FN, "a")) == 0


def test_a_full_batch_in_the_queue_ends_a_hold(queues, redis_client):
    a, b = queues("a"), queues("b")
    futures = _queued(b, redis_client, 4)
    a._remote.note_depth(4)  # as the next beat would read it
    items = a.next_batch(4, 0.0, 0.5, not_before=lambda: time.monotonic() + 60)
    assert [i.request.body for i in items] == [b"0", b"1", b"2", b"3"]
    _answer(items)
    a.batch_done()
    assert [f.result(5).body for f in futures] == [str(i).encode() * 2 for i in range(4)]


def test_a_batch_taken_before_redis_came_back_still_sends_its_answers_and_trims_nothing(queues, redis_client):
    # Reconnecting gives back what the instance had claimed (another instance may run it again) and never
    # happens in the middle of a take. The batch already taken still runs here: its answers must reach
    # their callers, while the claimed list, now holding only claims made after, is left alone.
    states: list[bool] = []
    a, b = queues("a", on_redis_state=states.append, beat_interval=0.1), queues("b")
    futures = _queued(b, redis_client, 2)
    thread, got = _take_in_thread(a, 4, 30.0)  # claims both, then waits for company
    wait_until(lambda: redis_client.llen(keys.claimed(FN, "a")) == 2, 2, what="the batch claimed")
    a._lost("a test's simulated loss")
    thread.join(5)  # a take stops waiting for company once Redis is lost
    assert [i.request.body for i in got["items"]] == [b"0", b"1"]
    wait_until(lambda: states[-2:] == [False, True], 5, what="reconnected")
    assert redis_client.llen(keys.claimed(FN, "a")) == 0 and redis_client.llen(keys.queue(FN)) == 2  # given back
    for item in got["items"]:
        item.future.set_result(Response(b"ran before the loss"))
    a.batch_done()
    assert [f.result(5).body for f in futures] == [b"ran before the loss"] * 2
    worker = serve(a)  # the copies given back run again; their second answers are dropped
    wait_until(lambda: redis_client.llen(keys.queue(FN)) == 0 and redis_client.llen(keys.claimed(FN, "a")) == 0,
               5, what="the copies run")
    assert worker.stop(5)


def test_leaving_deregisters_even_when_releasing_the_last_batches_fails(queues, redis_client):
    a = queues("a")
    wait_until(lambda: redis_client.zscore(keys.instances(FN), "a") is not None, 2, what="heartbeat")

    def fail() -> None:
        raise redis.ConnectionError("a test's failing release")

    a._remote.release_now = fail
    a.leave()
    assert redis_client.zscore(keys.instances(FN), "a") is None
