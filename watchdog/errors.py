"""Errors of the watchdog and the one place that maps every error to its HTTP status.

    WatchdogError          base
    ├── HandlerNotFound    no function/handler.py, or it lacks handle_batch and handle (start-up)
    ├── TooManyRequests    max_inflight reached (429, of-watchdog's wording)
    ├── RequestTimeout     the body was not read within read_timeout (408)
    ├── UnsupportedCoding  a Transfer-Encoding other than chunked (501)
    └── ClientGone         the caller closed its connection while its request was queued (never answered)
Batch errors (``batcher.errors``) keep their own status: 400, 413, 500, 503, 504.
"""

from __future__ import annotations

from batcher.errors import BatchError


class WatchdogError(Exception):
    """Base of the watchdog's own errors."""

    status = 500


class HandlerNotFound(WatchdogError):
    """The handler module is missing or does not offer the contract."""


class TooManyRequests(WatchdogError):
    """Over ``max_inflight``."""

    status = 429


class RequestTimeout(WatchdogError):
    """The request body did not arrive within ``read_timeout``."""

    status = 408


class UnsupportedCoding(WatchdogError):
    """A request body in a transfer coding other than chunked: its bytes cannot be handed on as sent."""

    status = 501


def status_of(exc: BaseException) -> int:
    """The HTTP status an error is answered with; anything unexpected is a 500."""
    if isinstance(exc, (WatchdogError, BatchError)):
        return exc.status
    return 500


class ClientGone(WatchdogError):
    """The caller closed its connection while its request waited in the queue: the request is dropped and
    nobody reads an answer (the connection is closed unanswered)."""
