"""Errors of the batch path.

    BatchError            base; carries the HTTP status the watchdog answers with
    ├── BadInput          the handler says this request's input is bad (400); raise it from a handler
    ├── HandlerFailed     the handler raised anything else, or broke its contract (500)
    ├── Rejected          refused at admission: queue full or the SLO can no longer be met (503)
    ├── DeadlineExceeded  the request's deadline passed before it could run or finish (504)
    └── PayloadTooLarge   the request or a response is over the configured size limit (413)
"""

from __future__ import annotations


class BatchError(Exception):
    """Base of the batch path's errors; ``status`` is the HTTP status for the caller."""

    status = 500


class BadInput(BatchError, ValueError):
    """Raise from ``handle_batch`` (or return in a request's place) when that request's input is bad."""

    status = 400


class HandlerFailed(BatchError):
    """The handler raised, or returned the wrong number of responses."""

    status = 500


class Rejected(BatchError):
    """Refused at admission so that the queue never holds work it cannot finish within the SLO."""

    status = 503


class DeadlineExceeded(BatchError):
    """The deadline passed (exec_timeout, X-Timeout) before the request ran or finished."""

    status = 504


class PayloadTooLarge(BatchError):
    """A body over the configured limit."""

    status = 413
