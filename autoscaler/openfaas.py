"""A small client of the OpenFaaS REST API (gateway or provider): list, deploy, update, scale, delete.

Basic auth comes from the secret files (``basic-auth-user``, ``basic-auth-password``) when a folder is
given. Deploy answers 200/201/202 are all success (faasd 200, faas-netes 202); errors raise
``OpenFaaSError`` with the status and body, ``OpenFaaSUnreachable`` when no whole answer came within the
client's timeout (a call, body included, never takes longer).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import requests
from urllib3 import Timeout
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError


# Most bytes of one answer read (a list of 1,000 functions is about 2 MB).
MAX_ANSWER = 64 * 2**20


class OpenFaaSError(RuntimeError):
    """The API refused a call or could not be reached."""


class OpenFaaSUnreachable(OpenFaaSError):
    """The API did not answer: no connection, or no reply within the client's timeout."""


def read_auth(secret_mount_path: str) -> tuple[str, str] | None:
    """(user, password) from the secret files, or None when there is no folder or no files."""
    if not secret_mount_path:
        return None
    try:
        with open(os.path.join(secret_mount_path, "basic-auth-user"), encoding="utf-8") as f:
            user = f.read().strip()
        with open(os.path.join(secret_mount_path, "basic-auth-password"), encoding="utf-8") as f:
            password = f.read().strip()
    except OSError:
        return None
    return user, password


class OpenFaaSClient:
    """Calls ``/system/*`` on one gateway."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None, namespace: str = "",
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = auth

    def _call(self, method: str, path: str, **kw: Any) -> bytes:
        """The answer's body; the whole call, body included, within ``timeout`` (the socket's timeout alone
        bounds each read, so an API trickling its answer held the control loop for as long as it trickled). Only
        a head trickled line by line outlasts it: each of its reads waits at most what connecting left."""
        params = kw.pop("params", {})
        if self.namespace:
            params["namespace"] = self.namespace
        deadline = time.monotonic() + self.timeout
        try:  # total: the answer's head waits only for what connecting left (each was given the whole timeout)
            with self.session.request(method, self.base_url + path, params=params,
                                      timeout=Timeout(total=self.timeout), stream=True, **kw) as response:
                body = _read(response, deadline, f"{method} {path}", self.timeout)
        except (requests.ConnectionError, requests.Timeout, ReadTimeoutError, ProtocolError) as exc:
            raise OpenFaaSUnreachable(f"{method} {path}: {exc}") from None
        except (requests.RequestException, HTTPError) as exc:  # the body is read from urllib3 (_read)
            raise OpenFaaSError(f"{method} {path}: {exc}") from None
        if response.status_code not in (200, 201, 202):
            text = body.decode("utf-8", "replace").strip()
            raise OpenFaaSError(f"{method} {path}: {response.status_code} {text[:200]}")
        return body

    def list_functions(self) -> list[Any]:
        """Every FunctionStatus, as the API lists them (observe skips entries it cannot read)."""
        raw = self._call("GET", "/system/functions")
        try:
            body = json.loads(raw)
        except ValueError:  # UnicodeDecodeError included
            text = raw.decode("utf-8", "replace").strip()
            raise OpenFaaSError(f"GET /system/functions: not JSON: {text[:100]!r}") from None
        if body is None:
            return []
        if not isinstance(body, list):
            raise OpenFaaSError(f"GET /system/functions: expected a JSON list, got {type(body).__name__}")
        return body

    def deploy(self, spec: dict[str, Any]) -> None:
        """Create a function (POST)."""
        self._call("POST", "/system/functions", json=self._with_ns(spec))

    def update(self, spec: dict[str, Any]) -> None:
        """Replace a function's spec (PUT, the full spec)."""
        self._call("PUT", "/system/functions", json=self._with_ns(spec))

    def scale(self, name: str, replicas: int) -> None:
        """Set a function's replicas."""
        body = {"serviceName": name, "replicas": replicas}
        self._call("POST", f"/system/scale-function/{name}", json=self._with_ns(body))

    def delete(self, name: str) -> None:
        """Remove a function (its replicas drain on SIGTERM)."""
        self._call("DELETE", "/system/functions", json=self._with_ns({"functionName": name}))

    def _with_ns(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "namespace": self.namespace} if self.namespace else body


def _read(response: requests.Response, deadline: float, call: str, timeout: float) -> bytes:
    """The body as it arrives, until ``deadline`` (``OpenFaaSUnreachable`` after it) or ``MAX_ANSWER`` bytes."""
    late = f"{call}: no whole answer within {timeout:g}s"
    cut = threading.Event()

    def stop_reading() -> None:  # checked between reads, a read begun before the deadline waited a timeout more
        cut.set()
        try:
            response.raw.shutdown()  # the read waiting returns at once; the connection is not reused
        except (ValueError, RuntimeError, OSError):  # already read whole (the connection back in its pool)
            pass

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop_reading)
    timer.daemon = True
    timer.start()
    parts, size = [], 0
    try:
        while True:
            try:
                part = response.raw.read1(65536, decode_content=True)
            except (ReadTimeoutError, ProtocolError):
                if cut.is_set():  # an answer cut short at the deadline reads as incomplete
                    raise OpenFaaSUnreachable(f"{late} ({size} bytes read)") from None
                raise
            if cut.is_set():  # an answer without a length reads as ended
                raise OpenFaaSUnreachable(f"{late} ({size} bytes read)")
            if not part:
                return b"".join(parts)
            size += len(part)
            if size > MAX_ANSWER:
                raise OpenFaaSError(f"{call}: answer larger than {MAX_ANSWER} bytes")
            parts.append(part)
    finally:
        timer.cancel()
