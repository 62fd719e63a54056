"""Running one batch: call the handler, isolate failures, fan the results back to every waiter.

Every future of a batch gets an answer, whatever the handler does: a handler that raises (anything,
``SystemExit`` and ``KeyboardInterrupt`` included) is retried on halves of the batch until the failing
requests stand alone (so one bad input costs only itself), an exception returned in a request's place, or
an output that cannot be sent over HTTP, fails only that request, and a wrong number of outputs fails the
batch with both counts in the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from batcher.errors import BadInput, BatchError, DeadlineExceeded, HandlerFailed
from batcher.queue import Pending, settle
from batcher.request import Request, Response, to_response

logger = logging.getLogger(__name__)

HandleBatch = Callable[[list[Request]], Sequence[Any]]


@dataclass(frozen=True)
class BatchOutcome:
    """What one dispatch did, for metrics and the execution-time model."""

    # Requests handed to the handler in the first call (after dropping expired and cancelled ones).
    size: int
    # Seconds of the first (whole-batch) handler call.
    exec_seconds: float
    # Requests answered with a response.
    succeeded: int
    # Requests failed (bad input, handler failure, deadline).
    failed: int
    # True when the whole batch ran in one call without an error (its time is a clean measurement).
    clean: bool


def take_runnable(items: list[Pending], now: float) -> list[Pending]:
    """Drop items whose caller gave up or whose deadline passed; answer the expired ones with 504."""
    runnable = []
    for item in items:
        try:
            if not item.future.set_running_or_notify_cancel():
                continue
        except RuntimeError:  # answered already (a duplicate delivered by another instance): not run again
            continue
        if item.deadline <= now:
            settle(item.future, DeadlineExceeded(f"deadline passed after {now - item.enqueued_at:.3f}s in the queue; "
                                                 "not run"))
            continue
        runnable.append(item)
    return runnable


def call_handler(handle: HandleBatch, requests: list[Request]) -> tuple[list[Response | BatchError], float | None]:
    """One handler call: a response or an error per request, or raise if the call failed as a whole; and
    the call's own seconds when the handler's runner knows them better than the caller's clock (an
    ``exec_seconds`` attribute on the outputs: a child process that ran batches sent before this one)."""
    outputs = handle(requests)
    breach = shape_error(outputs)
    if breach:
        raise BatchAborted(HandlerFailed(breach))
    if len(outputs) != len(requests):
        raise BatchAborted(HandlerFailed(f"handle_batch returned {len(outputs)} responses for {len(requests)} "
                                         "requests"))
    results: list[Response | BatchError] = []
    for output in outputs:
        if isinstance(output, BaseException):
            results.append(as_batch_error(output))
            continue
        try:
            results.append(to_response(output))
        except BatchError as exc:
            results.append(exc)
    return results, getattr(outputs, "exec_seconds", None)


def shape_error(outputs: Any) -> str:
    """Why ``outputs`` is not a list of responses a handler may return ("" when it is one)."""
    if outputs is None or isinstance(outputs, (str, bytes, bytearray, Mapping)) or not hasattr(outputs, "__len__"):
        return f"handle_batch must return a list with one response per request, got {type(outputs).__name__}"
    if isinstance(outputs, AbstractSet):
        return (f"handle_batch must return a list with one response per request, got {type(outputs).__name__}: "
                "it has no order, so no output can be told to be whose")
    return ""


def run_isolated(handle: HandleBatch, requests: list[Request],
                 on_first_call: Callable[[float, bool], None] | None = None) -> list[Response | BatchError]:
    """Results for ``requests``, each response tagged ``X-Batch-Size`` with the size of the call that made it
    (after bisection, a half's, not the batch's); when the handler raises, bisect until the failing requests
    stand alone."""
    start = time.perf_counter()
    try:
        results, own_seconds = call_handler(handle, requests)
    except BatchAborted as exc:
        if on_first_call:
            on_first_call(time.perf_counter() - start, False)
        return [exc.error] * len(requests)
    except BaseException as exc:  # noqa: BLE001 - a user handler may raise anything, sys.exit() included:
        # on a worker thread SystemExit would end the thread silently and leave every later request to time
        # out; the watchdog's own shutdown comes by signal handlers, never through a handler call
        if on_first_call:
            on_first_call(time.perf_counter() - start, False)
        if len(requests) == 1:
            log_failure(requests[0].id, exc)
            return [as_batch_error(exc)]
        mid = len(requests) // 2
        return run_isolated(handle, requests[:mid]) + run_isolated(handle, requests[mid:])
    if on_first_call:
        on_first_call(time.perf_counter() - start if own_seconds is None else own_seconds, True)
    size = str(len(requests))
    return [r.with_header("X-Batch-Size", size) if isinstance(r, Response) else r for r in results]


def log_failure(request_id: str, exc: BaseException) -> None:
    """Log what the handler raised on one request: nothing for the client's error (a 4xx, ``BadInput``: a
    client sending garbage must not flood the log), one line for our own errors (a child process's report, a
    coroutine cancelled at its limit: the message says it all), the traceback for anything else (the only way
    to find the failing line of the user's handler)."""
    if isinstance(exc, BatchError) and exc.status < 500:
        return
    logger.warning("handler failed on request %s: %r", request_id, exc,
                   exc_info=None if isinstance(exc, BatchError) else exc)


def fan_out(items: list[Pending], results: list[Response | BatchError]) -> tuple[int, int]:
    """Resolve each item's future with its result; returns (succeeded, failed)."""
    ok = failed = 0
    for item, result in zip(items, results):
        # A future answered meanwhile (another instance's reply to a duplicate run) is left as it is.
        if isinstance(result, Response):
            ok += settle(item.future, result)
        else:
            failed += settle(item.future, result)
    return ok, failed


def dispatch(handle: HandleBatch, items: list[Pending], now: float) -> BatchOutcome | None:
    """Run one batch end to end; None when nothing in it was still runnable."""
    runnable = take_runnable(items, now)
    if not runnable:
        return None
    first: list[tuple[float, bool]] = []
    try:
        results = run_isolated(handle, [item.request for item in runnable],
                               lambda seconds, clean: first.append((seconds, clean)))
    except BaseException as exc:  # never leave a waiter hanging, even on KeyboardInterrupt
        for item in runnable:
            settle(item.future, HandlerFailed(f"batch aborted: {exc!r}"))
        raise
    ok, failed = fan_out(runnable, results)
    seconds, clean = first[0] if first else (0.0, False)
    return BatchOutcome(len(runnable), seconds, ok, failed, clean)


class BatchAborted(Exception):
    """The whole batch fails with ``error``, no bisection: the handler's answer has the wrong shape, or
    the process running it died or hung (trying halves would only repeat that)."""

    def __init__(self, error: BatchError) -> None:
        super().__init__(str(error))
        self.error = error


def as_batch_error(exc: BaseException) -> BatchError:
    """The error a request is answered with when the handler raised ``exc`` (or returned it in its place)."""
    if isinstance(exc, BatchError):
        return exc
    if isinstance(exc, BadInput):
        return exc
    return HandlerFailed(f"handler raised {type(exc).__name__}: {exc}")
