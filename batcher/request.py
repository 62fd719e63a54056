"""The values that cross the handler contract: ``Request`` in, ``Response`` (or something convertible) out."""

from __future__ import annotations

import itertools
import json
import operator
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

_id_prefix = ""
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = uuid.uuid4().hex[:20], itertools.count()


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_id() -> str:
    """A fresh unique id: 80 random bits per process (drawn again in a forked child), then a counter.

    Unique across processes and hosts like ``uuid4().hex``, without its system call per id.
    """
    return f"{_id_prefix}{next(_id_counter):x}"


def call_id(headers: Mapping[str, str]) -> str:
    """The request's id: the gateway's ``X-Call-Id`` when it sent a usable one, else ``new_id()``.

    ``headers`` as both HTTP engines build them: names title-cased, so one look-up finds it."""
    value = headers.get("X-Call-Id")
    return value if value and len(value) <= 128 and value.isprintable() else new_id()


@dataclass(frozen=True)
class Request:
    """One call to the function, as the handler sees it."""

    # Raw request body, already de-chunked.
    body: bytes = b""
    # Request headers, names title-cased as Go's net/http (so OpenFaaS) canonicalises them (``X-Api-Key`` for
    # ``X-API-Key``); ``header()`` looks one up regardless of case.
    headers: Mapping[str, str] = field(default_factory=dict)
    # HTTP method as sent.
    method: str = "POST"
    # Path below the function's root, always starting with "/", percent-escapes decoded as UTF-8 (as Flask's
    # ``request.path``); the query keeps its encoding.
    path: str = "/"
    # Raw query string without the "?", percent-encoding untouched.
    query: str = ""
    # Unique id; the watchdog takes X-Call-Id when the gateway sent one.
    id: str = field(default_factory=new_id)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` regardless of case, or ``default``."""
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return default

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON; a ``BadInput`` naming the problem when it is not JSON."""
        from batcher.errors import BadInput

        if not self.body.strip():  # a GET, or a POST without -d: the decoder's "Expecting value" hides that
            raise BadInput("request body is empty: expected JSON")
        try:
            body = self.body
            if isinstance(body, (bytes, bytearray)):
                body = body.decode(json.detect_encoding(body), "surrogatepass")
            return _DECODER.decode(body)
        except _NonFinite as exc:
            raise BadInput(f"request body is not valid JSON: {exc} is not a JSON number") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadInput("request body is JSON nested too deeply to parse") from None

    def to_wire(self) -> dict[str, Any]:
        """A JSON-safe dict (the body travels separately as bytes)."""
        return {"id": self.id, "method": self.method, "path": self.path, "query": self.query,
                "headers": dict(self.headers)}

    @classmethod
    def from_wire(cls, meta: Mapping[str, Any], body: bytes) -> "Request":
        """Inverse of ``to_wire``."""
        return cls(body=body, headers=dict(meta.get("headers", {})), method=str(meta.get("method", "POST")),
                   path=str(meta.get("path", "/")), query=str(meta.get("query", "")), id=str(meta["id"]))


@dataclass(frozen=True)
class Response:
    """What the caller receives: status, headers and body."""

    # Body bytes as sent to the caller.
    body: bytes = b""
    # HTTP status code.
    status: int = 200
    # Response headers; Content-Type is set from the value's kind when the handler gives none.
    headers: Mapping[str, str] = field(default_factory=dict)

    def with_header(self, name: str, value: str) -> "Response":
        """This response with header ``name`` set to ``value`` (a direct copy, cheaper than ``replace``)."""
        return Response(self.body, self.status, {**self.headers, name: value})

    def to_wire(self) -> dict[str, Any]:
        """A JSON-safe dict (the body travels separately as bytes)."""
        return {"status": self.status, "headers": dict(self.headers)}

    @classmethod
    def from_wire(cls, meta: Mapping[str, Any], body: bytes) -> "Response":
        """Inverse of ``to_wire``."""
        return cls(body=body, status=int(meta.get("status", 200)), headers=dict(meta.get("headers", {})))


def to_response(value: Any) -> Response:
    """Turn a handler's output into a ``Response``: bytes, text, a JSON-able value, or a ``Response`` (checked
    to be sendable: a ``HandlerFailed`` naming the problem when it is not)."""
    if isinstance(value, Response):
        problem = unsendable(value)
        if problem:
            from batcher.errors import HandlerFailed

            raise HandlerFailed(f"handler returned a Response that cannot be sent: {problem}")
        if type(value.body) is not bytes or type(value.status) is not int:  # a memoryview, an HTTPStatus: sent
            return Response(bytes(value.body), operator.index(value.status), value.headers)  # bytes, a plain int
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Response(bytes(value), 200, {"Content-Type": "application/octet-stream"})
    if isinstance(value, str):
        return Response(value.encode("utf-8"), 200, {"Content-Type": "text/plain; charset=utf-8"})
    try:
        body = _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError) as exc:
        from batcher.errors import HandlerFailed

        raise HandlerFailed(f"handler returned a {type(value).__name__} that is not JSON-serialisable: {exc}")
    return Response(body, 200, {"Content-Type": "application/json"})


# RFC 9110 token characters: what a method or a header name may hold (the watchdog's HTTP engine checks too).
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def unsendable(response: Response) -> str:
    """Why ``response`` cannot go out as HTTP/1.1 ("" when it can): its status is not an int in 200..599 (a
    1xx is an interim answer: a client would go on waiting for the real one), its body is not bytes, or a
    header name is not a token or a value not Latin-1 text without CR, LF or NUL (a value with CR LF would
    inject headers of its own)."""
    status = response.status
    try:
        code = operator.index(status)  # an int, an HTTPStatus, a numpy integer
    except TypeError:
        code = 0
    if isinstance(status, bool) or not 200 <= code <= 599:
        return f"status {status!r}: must be an int in 200..599 (1xx are interim answers)"
    if not isinstance(response.body, (bytes, bytearray, memoryview)):
        return (f"body is a {type(response.body).__name__}: must be bytes (return the value itself to have it "
                "encoded)")
    if not isinstance(response.headers, Mapping):
        return f"headers is a {type(response.headers).__name__}: must be a mapping of str to str"
    for name, value in response.headers.items():
        if not isinstance(name, str) or not name or not TOKEN.issuperset(name):
            return f"header name {name!r}: must be a non-empty HTTP token"
        if not isinstance(value, str):
            return f"header {name}: value is a {type(value).__name__}, must be str"
        if "\r" in value or "\n" in value or "\0" in value:
            return f"header {name}: value {value!r} holds CR, LF or NUL"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"header {name}: value {value!r} is not Latin-1 (encode it, e.g. percent-encoding)"
    return ""


class _NonFinite(ValueError):
    """NaN or Infinity in a request body: Python's json accepts them, JSON does not."""


def _reject_constant(name: str) -> None:
    raise _NonFinite(name)


# One of each per process: ``json.loads``/``json.dumps`` with keyword arguments build a new decoder or encoder
# (and its scanner) on every call, a few microseconds a request in the batch worker.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
