"""The batch worker: batches from the queue, and callers running a batch themselves only when idle."""

import threading
import time

from batcher.policy import BatchConfig, ExecTimeModel
from batcher.queue import LocalBatchQueue, Pending
from batcher.request import Request
from batcher.worker import BatchWorker


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
