"""The batch worker: batches from the queue, and callers running a batch themselves only when idle."""

import threading
import time

from batcher.policy import BatchConfig, ExecTimeModel
from batcher.queue import LocalBatchQueue, Pending
from batcher.request import Request
from batcher.worker import BatchWorker
from helpers import wait_until


def make_worker(handle, max_batch_size=4):
    queue = LocalBatchQueue()
    seen = []
    worker = BatchWorker(queue, handle, lambda: BatchConfig(max_batch_size, 0.02), ExecTimeModel(),
                         on_batch=lambda outcome, items, started: seen.append(outcome.size), poll=0.05)
    return queue, worker, seen


def test_worker_answers_queued_requests_in_batches():
    queue, worker, seen = make_worker(lambda reqs: [r.body for r in reqs])
    futures = [queue.put(Request(body=str(i).encode()), 1e18) for i in range(6)]
    worker.start()
    assert [f.result(5) for f in futures] and [f.result().body for f in futures] == [str(i).encode() for i in range(6)]
    assert worker.stop(5) and sum(seen) == 6 and max(seen) == 4


def test_caller_runs_the_batch_when_idle():
    threads = []
    queue, worker, seen = make_worker(lambda reqs: threads.append(threading.current_thread().name) or ["ok"])
    worker.start()
    item = Pending(Request(), 1e18, time.monotonic())
    assert worker.try_run_inline([item])
    assert item.future.result(0).body == b"ok" and threads == [threading.current_thread().name] and seen == [1]
    worker.stop(5)


def test_caller_declines_when_work_is_queued_or_running_or_stopped():
    release = threading.Event()
    queue, worker, _ = make_worker(lambda reqs: release.wait(5) and ["x"] * len(reqs), max_batch_size=1)
    queue.put(Request(), 1e18)
    assert not worker.try_run_inline([Pending(Request(), 1e18, 0.0)])  # something is queued
    worker.start()
    deadline = time.monotonic() + 5
    while queue.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.try_run_inline([Pending(Request(), 1e18, 0.0)])  # a batch is running
    release.set()
    worker.stop(5)
    assert not worker.try_run_inline([Pending(Request(), 1e18, 0.0)])  # stopped


def test_a_pipelined_worker_sends_a_full_batch_while_one_is_in_flight_and_one_at_a_time_otherwise():
    for depth, most in ((2, 2), (1, 1)):
        running, most_seen, lock, release = [0], [0], threading.Lock(), threading.Event()

        def handle(reqs):
            with lock:
                running[0] += 1
                most_seen[0] = max(most_seen[0], running[0])
            release.wait(0.5)
            with lock:
                running[0] -= 1
            return [r.body for r in reqs]

        queue = LocalBatchQueue()
        worker = BatchWorker(queue, handle, lambda: BatchConfig(2, 0.01), ExecTimeModel(), poll=0.05, depth=depth)
        worker.start()
        futures = [queue.put(Request(body=b"%d" % i), 1e18) for i in range(6)]
        assert [f.result(10).body for f in futures] == [b"%d" % i for i in range(6)]
        assert worker.stop(5) and most_seen[0] == most


def test_busy_remaining_counts_the_batches_in_flight_one_after_another():
    now, gates, entered = [100.0], {b"a": threading.Event(), b"b": threading.Event()}, []
    model = ExecTimeModel()
    for _ in range(3):
        model.observe(1, 0.010)

    def handle(reqs):
        entered.append(reqs[0].body)
        gates[reqs[0].body].wait(10)
        return [r.body for r in reqs]

    worker = BatchWorker(LocalBatchQueue(), handle, lambda: BatchConfig(1), model, clock=lambda: now[0], depth=2)
    assert worker.busy_remaining() == 0
    first = threading.Thread(target=worker._run_batch, args=([Pending(Request(body=b"a"), 1e18, 100.0)],))
    first.start()
    wait_until(lambda: entered == [b"a"])
    now[0] = 100.002
    second = threading.Thread(target=worker._run_batch, args=([Pending(Request(body=b"b"), 1e18, 100.0)],))
    second.start()
    wait_until(lambda: entered == [b"a", b"b"])
    now[0] = 100.009
    assert abs(worker.busy_remaining() - 0.011) < 1e-9  # 2 x 10 ms from the first's start, 9 ms gone
    assert not worker.try_run_inline([Pending(Request(), 1e18, 0.0)])  # never beside a batch in flight
    now[0] = 100.010
    gates[b"a"].set()
    first.join(5)
    assert abs(worker.busy_remaining() - 0.010) < 1e-9  # the second starts when the first ends
    gates[b"b"].set()
    second.join(5)
    assert worker.busy_remaining() == 0


def test_a_batch_run_by_its_caller_that_ends_early_releases_the_taker_held_behind_it():
    # A pipelined taker holds what is queued until the batch in flight is predicted to end (here, in a
    # minute); when that batch, run by its caller, ends at once, the queued request must go now.
    gate, ran = threading.Event(), []

    def handle(reqs):
        ran.append(reqs[0].body)
        if reqs[0].body == b"inline":
            gate.wait(10)
        return [r.body for r in reqs]

    queue = LocalBatchQueue()
    worker = BatchWorker(queue, handle, lambda: BatchConfig(4, 0.0), ExecTimeModel(prior=lambda n: 60.0),
                         poll=0.05, depth=2).start()
    inline = threading.Thread(target=worker.try_run_inline, args=([Pending(Request(body=b"inline"), 1e18, 0.0)],))
    inline.start()
    wait_until(lambda: ran == [b"inline"])
    queued = queue.put(Request(body=b"queued"), 1e18)
    time.sleep(0.2)
    assert not queued.done()  # held behind the batch in flight
    gate.set()
    inline.join(5)
    assert queued.result(5).body == b"queued"
    assert worker.stop(5)


def test_a_batch_whose_requests_are_all_answered_no_longer_counts_as_in_flight():
    # Its callers may send their next request before its thread has cleared it; admission must not
    # refuse that request for a batch that is over.
    model = ExecTimeModel(prior=lambda n: 0.5)
    worker = BatchWorker(LocalBatchQueue(), lambda reqs: [r.body for r in reqs], lambda: BatchConfig(4), model)
    item = Pending(Request(body=b"x"), 1e18, 0.0)
    worker._busy[1] = (time.monotonic(), [item])  # what _dispatch records while the batch runs
    assert worker.busy_remaining() > 0.4
    item.future.set_result(b"x")
    assert worker.busy_remaining() == 0 and worker._not_before() is None


def test_a_handler_calling_sys_exit_costs_its_request_and_the_worker_goes_on():
    import sys

    def handle(reqs):
        if any(r.body == b"exit" for r in reqs):
            sys.exit(1)
        return [r.body for r in reqs]

    queue, worker, _ = make_worker(handle, max_batch_size=1)
    worker.start()
    doomed = queue.put(Request(body=b"exit"), 1e18)
    assert "SystemExit" in str(doomed.exception(5))
    later = [queue.put(Request(body=str(i).encode()), 1e18) for i in range(3)]
    assert [f.result(5).body for f in later] == [b"0", b"1", b"2"]
    inline = Pending(Request(body=b"exit"), 1e18, time.monotonic())
    assert worker.try_run_inline([inline]) and "SystemExit" in str(inline.future.exception(0))
    assert worker.stop(5)
