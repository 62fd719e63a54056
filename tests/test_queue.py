"""The in-process batch queue: full batches, the oldest request's deadline, close."""

import gc
import threading
import time

from batcher.queue import LocalBatchQueue, QueueClosed
from batcher.request import Request, Response

import pytest


def test_full_batch_is_released_at_once():
    q = LocalBatchQueue()
    for i in range(5):
        q.put(Request(body=str(i).encode()), deadline=1e9)
    batch = q.next_batch(4, timeout=60)
    assert [p.request.body for p in batch] == [b"0", b"1", b"2", b"3"]
    assert q.depth() == 1


def test_partial_batch_waits_for_oldest_timeout():
    q = LocalBatchQueue()
    q.put(Request(), 1e9)
    started = time.monotonic()
    batch = q.next_batch(8, timeout=0.05)
    assert len(batch) == 1 and time.monotonic() - started >= 0.04


def test_arrival_during_wait_joins_the_batch():
    q = LocalBatchQueue()
    q.put(Request(), 1e9)
    threading.Timer(0.02, lambda: q.put(Request(), 1e9)).start()
    assert len(q.next_batch(8, timeout=0.2)) == 2


def test_idle_poll_returns_empty():
    assert LocalBatchQueue().next_batch(4, 0.01, poll=0.01) == []


def test_close_hands_out_rest_and_refuses_new():
    q = LocalBatchQueue()
    q.put(Request(), 1e9)
    q.close()
    assert len(q.next_batch(8, timeout=60)) == 1
    assert q.next_batch(8, timeout=60) == []
    with pytest.raises(QueueClosed):
        q.put(Request(), 1e9)


def test_a_worker_that_never_started_stops_at_once():
    from batcher.policy import BatchConfig, ExecTimeModel
    from batcher.worker import BatchWorker

    worker = BatchWorker(LocalBatchQueue(), lambda requests: [], lambda: BatchConfig(4), ExecTimeModel())
    assert worker.stop(1)


def test_a_taker_held_back_by_not_before_does_not_keep_the_item_from_a_free_one():
    # A pipelined worker's second taker waits for the batch in flight (not_before); when a first request
    # comes, the taker that may take it now must get it, whichever of the two was waiting first.
    queue, got = LocalBatchQueue(), {}
    held = threading.Thread(target=lambda: got.update(held=queue.next_batch(4, 0.0, 5.0,
                                                                            not_before=lambda: time.monotonic() + 60)))
    held.start()
    time.sleep(0.05)  # the held-back taker waits first
    free = threading.Thread(target=lambda: got.update(free=queue.next_batch(4, 0.0, 5.0)))
    free.start()
    time.sleep(0.05)
    queue.put(Request(body=b"x"), 1e18)
    free.join(5)
    assert [p.request.body for p in got["free"]] == [b"x"]
    queue.close()
    held.join(5)
    assert got["held"] == []


def test_not_before_holds_a_batch_until_then_unless_it_is_full():
    queue = LocalBatchQueue()
    queue.put(Request(body=b"a"), 1e18)
    start = time.monotonic()
    assert len(queue.next_batch(2, 0.0, 5.0, not_before=lambda: start + 0.3)) == 1  # its timeout passed long before
    assert time.monotonic() - start >= 0.3
    queue.put(Request(body=b"b"), 1e18)
    queue.put(Request(body=b"c"), 1e18)
    assert len(queue.next_batch(2, 0.0, 5.0, not_before=lambda: time.monotonic() + 60)) == 2  # full: at once


def test_a_request_cancelled_while_it_waits_leaves_the_queue_and_no_batch_counts_it():
    q = LocalBatchQueue()
    futures = [q.put(Request(body=str(i).encode()), deadline=1e9) for i in range(3)]
    assert futures[1].cancel()
    assert q.depth() == 2
    futures[0].set_running_or_notify_cancel()  # one taken and running is not dropped by a failed cancel
    assert not futures[0].cancel() and q.depth() == 2
    assert [p.request.body for p in q.next_batch(2, timeout=60)] == [b"0", b"2"]


def test_a_request_answered_or_cancelled_leaves_no_cycle_for_the_collector():
    # The drop-on-cancel callback closed over its item (item -> future -> callback -> item): every request's
    # objects, its body included, waited for a full collection, which under load holds the GIL for tens of ms.
    q = LocalBatchQueue()
    gc.collect()
    gc.disable()
    try:
        answered = q.put(Request(body=b"a"), deadline=1e9)
        cancelled = q.put(Request(body=b"c"), deadline=1e9)
        assert cancelled.cancel() and q.depth() == 1
        taken = q.next_batch(1, timeout=0.0)
        assert [p.request.body for p in taken] == [b"a"]
        taken[0].future.set_running_or_notify_cancel()
        taken[0].future.set_result(Response(b"ok"))
        assert answered.result(0).body == b"ok"
        del answered, cancelled, taken
        assert gc.collect() == 0  # freed by reference counting as they were answered or dropped
    finally:
        gc.enable()
