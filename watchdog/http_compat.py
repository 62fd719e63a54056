"""Serving a handler written for OpenFaaS's ``python3-http`` template unchanged: ``handle(event, context)``.

Such a handler (recognised by a two-parameter ``handle`` and no ``load``: with nothing loaded, the first
parameter cannot be the state) is called once per request with an ``Event`` (``body`` bytes, ``headers``,
``method``, ``query`` as a dict of the first value of each name, ``path``; ``headers`` read regardless of
case and ``query.getlist``, as the template's Flask request has them) and a ``Context`` (``hostname``), and
returns what that template turns into an answer: ``None`` (an empty 200) or a dict with ``statusCode``
(200 when absent), ``body`` and ``headers``. A ``body`` that is a dict or a list goes out as JSON, bytes as
they are, anything else as its text; a ``Content-Type`` the handler names is kept. What is not such a
dict fails that request alone with a message saying what was expected.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping
from urllib.parse import parse_qsl

from batcher.errors import HandlerFailed
from batcher.request import Request, Response


class Headers(Mapping[str, str]):
    """A request's headers looked up regardless of case, as Flask's ``request.headers`` (the template's
    ``event.headers``): ``event.headers.get("content-type")`` finds ``Content-Type``."""

    __slots__ = ("_headers", "_lower")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers
        self._lower = {k.lower(): v for k, v in headers.items()}

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._lower[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __repr__(self) -> str:
        return f"Headers({dict(self._headers)!r})"


class Query(dict):
    """The query as the template's ``event.query`` (Flask's ``request.args``) reads: the first value of each
    name, and ``getlist(name)`` for all of them."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        for name, value in pairs:
            self.setdefault(name, value)
        self._pairs = pairs

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, in order (empty when absent)."""
        return [value for key, value in self._pairs if key == name]


@dataclass(frozen=True)
class Event:
    """One request as a ``python3-http`` handler reads it."""

    body: bytes
    headers: Headers
    method: str
    query: Query
    path: str
    # The whole query, every value of a repeated name kept, for handlers that need them.
    query_pairs: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Context:
    """What a ``python3-http`` handler knows of where it runs."""

    hostname: str


def is_http_handler(module: Any) -> bool:
    """True for a ``python3-http`` module: a two-parameter ``handle`` (``context=None`` counts: the template
    passes both) and no ``load``."""
    import inspect

    handle = getattr(module, "handle", None)
    if not callable(handle) or callable(getattr(module, "load", None)) or callable(getattr(module, "handle_batch", None)):
        return False
    try:
        params = inspect.signature(handle).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 2


def event(request: Request) -> Event:
    """The ``Event`` of ``request``."""
    pairs = tuple(parse_qsl(request.query, keep_blank_values=True))
    return Event(request.body, Headers(request.headers), request.method, Query(pairs), request.path, pairs)


def context() -> Context:
    """The ``Context`` every call gets (the template's: ``HOSTNAME``, else this host's name)."""
    return Context(os.environ.get("HOSTNAME") or socket.gethostname())


def answer(value: Any) -> Response:
    """The ``Response`` for what a ``python3-http`` handler returned. As under the template, keys other than
    statusCode, body and headers are ignored (``isBase64Encoded`` from a handler written for another
    platform), a statusCode may be digits in a string, and headers a list of (name, value) pairs."""
    if value is None:
        return Response(b"", 200, {})
    if not isinstance(value, Mapping):
        raise HandlerFailed(f"handle(event, context) returned a {type(value).__name__}: a python3-http handler "
                            "returns None or a dict of statusCode, body and headers")
    headers = _headers(value.get("headers") or {})
    body = value.get("body", "")
    named = next((k for k in headers if k.lower() == "content-type"), None)
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode("utf-8")
        if named is None:
            headers["Content-Type"] = "application/json"
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    else:
        data = ("" if body is None else str(body)).encode("utf-8")
        if named is None and data:
            headers["Content-Type"] = "text/html; charset=utf-8"
    status = value.get("statusCode", 200)
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int):
        raise HandlerFailed(f"handle(event, context) returned statusCode {status!r}: must be an int")
    return Response(data, status, headers)


def _headers(given: Any) -> dict[str, str]:
    """A python3-http answer's headers: a dict, or a list of (name, value) pairs."""
    if isinstance(given, Mapping):
        return {str(k): str(v) for k, v in given.items()}
    if isinstance(given, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in given):
        return {str(k): str(v) for k, v in given}
    raise HandlerFailed(f"handle(event, context) returned headers as a {type(given).__name__}: must be a dict or "
                        "a list of (name, value) pairs")
