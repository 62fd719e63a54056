"""The bytes that cross Redis: one line of JSON metadata, a newline, then the raw body. Never pickle.

A queued request carries a token (its routing key, unique per submission), the instance to reply to, an
absolute wall-clock deadline and its enqueue time (epoch seconds, so instances on one host or on
NTP-synchronised hosts agree). Its token comes first, on a line of its own, so the instance that queued a
request recognises it when it takes it back (``token_of``) and runs the request it still holds without
decoding the message. A reply carries the token and either a response or an error's status and
message; the error is rebuilt as the ``BatchError`` subclass that owns that status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from batcher.errors import BadInput, BatchError, DeadlineExceeded, HandlerFailed, PayloadTooLarge, Rejected
from batcher.request import Request, Response

SEP = b"\n"
_ERRORS: dict[int, type[BatchError]] = {400: BadInput, 413: PayloadTooLarge, 503: Rejected, 504: DeadlineExceeded}
# One encoder for every message (``json.dumps`` with ``separators`` builds a new one per call).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class WireError(ValueError):
    """A message that is not ``JSON line + body``."""


@dataclass(frozen=True)
class Envelope:
    """A request as it waits in the shared queue."""

    # Routing key of this submission: the reply names it, and a second reply for it is ignored.
    token: str
    # Instance id whose inbox gets the reply (the instance the caller is connected to).
    reply_to: str
    # Epoch seconds after which the caller has given up: the request is answered 504, not run.
    deadline: float
    # Epoch seconds at which it was queued; a batch's wait is counted from its oldest request.
    enqueued_at: float
    # The request itself.
    request: Request


@dataclass(frozen=True)
class Reply:
    """The answer to one envelope."""

    # The envelope's token.
    token: str
    # The response, or the error the caller gets.
    result: Response | BatchError
    # Instance id that ran it ("" when unknown).
    served_by: str = ""


def pack(meta: dict[str, Any], body: bytes) -> bytes:
    """``meta`` as one JSON line, then ``body`` untouched."""
    return b"".join((_COMPACT.encode(meta).encode("utf-8"), SEP, body))


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of ``pack``; a ``WireError`` when the message is malformed."""
    cut = data.find(SEP)
    if cut < 0:
        raise WireError("message has no metadata line")
    try:
        meta = json.loads(data[:cut])
    except ValueError as exc:
        raise WireError(f"metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise WireError("metadata is not a JSON object")
    return meta, data[cut + 1:]


def encode_request(env: Envelope) -> bytes:
    """An envelope as bytes for the queue: the token's line, then ``pack`` of the rest."""
    if not env.token or not env.token.isascii() or not env.token.isalnum():
        raise WireError(f"token {env.token!r}: must be ASCII letters and digits")
    meta = {"r": env.reply_to, "d": env.deadline, "e": env.enqueued_at, "q": env.request.to_wire()}
    return env.token.encode("ascii") + SEP + pack(meta, env.request.body)


def token_of(data: bytes) -> str:
    """The token of a queued request, read without decoding the rest ("" when there is none)."""
    cut = data.find(SEP, 0, 128)
    return data[:cut].decode("ascii", "replace") if cut > 0 else ""


def decode_request(data: bytes) -> Envelope:
    """Inverse of ``encode_request``."""
    cut = data.find(SEP, 0, 128)
    if cut <= 0:
        raise WireError("message has no token line")
    meta, body = unpack(data[cut + 1:])
    try:
        return Envelope(data[:cut].decode("ascii"), str(meta["r"]), float(meta["d"]), float(meta["e"]),
                        Request.from_wire(meta["q"], body))
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"bad request envelope: {exc!r}") from None


def encode_reply(reply: Reply) -> bytes:
    """A reply as bytes for an inbox."""
    meta: dict[str, Any] = {"t": reply.token, "by": reply.served_by}
    if isinstance(reply.result, Response):
        meta["ok"] = reply.result.to_wire()
        return pack(meta, reply.result.body)
    meta["err"] = {"status": reply.result.status, "message": str(reply.result)}
    return pack(meta, b"")


def decode_reply(data: bytes) -> Reply:
    """Inverse of ``encode_reply``."""
    meta, body = unpack(data)
    try:
        if "ok" in meta:
            return Reply(str(meta["t"]), Response.from_wire(meta["ok"], body), str(meta.get("by", "")))
        err = meta["err"]
        return Reply(str(meta["t"]), error_for(int(err["status"]), str(err["message"])), str(meta.get("by", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"bad reply: {exc!r}") from None


def error_for(status: int, message: str) -> BatchError:
    """The ``BatchError`` that answers with ``status`` (a 500 for anything unknown)."""
    return _ERRORS.get(status, HandlerFailed)(message)
