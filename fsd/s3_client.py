"""A small S3 client over ``requests``: path-style PUT/GET/DELETE/LIST object, SigV4-signed when given keys.

Enough for the object-storage channel against AWS S3, MinIO or the local test server (``fsd.s3_server``).
Every request is bounded by the client's ``timeout`` (connect, and each read), or by a shorter one the
caller passes (the time left before a job's deadline).
"""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlsplit

import requests

from fsd.errors import ChannelError, ChannelTimeout
from fsd.sigv4 import Credentials, authorization

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Client:
    """Object operations on one endpoint, path-style (``http://host:port/bucket/key``)."""

    def __init__(self, endpoint: str, credentials: Credentials | None = None, timeout: float = 10.0,
                 session: requests.Session | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self.session = session or requests.Session()
        self._host = urlsplit(self.endpoint).netloc

    def _request(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
                 body: bytes = b"", ok: tuple[int, ...] = (200,), timeout: float | None = None) -> requests.Response:
        query = query or []
        timeout = self.timeout if timeout is None else min(self.timeout, timeout)
        if timeout <= 0:
            raise ChannelTimeout(f"s3 {method} {path}: no time left before the deadline")
        headers: dict[str, str] = {}
        if self.credentials is not None:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            payload_hash = hashlib.sha256(body).hexdigest()
            signed = {"host": self._host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
            headers = {"x-amz-content-sha256": payload_hash, "x-amz-date": amz_date,
                       "Authorization": authorization(self.credentials, method, path, query, signed,
                                                      payload_hash, amz_date)}
        url = self.endpoint + quote(path, safe="/-_.~")
        params = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
        try:
            response = self.session.request(method, url + ("?" + params if params else ""), data=body,
                                            headers=headers, timeout=timeout)
        except requests.Timeout:
            raise ChannelTimeout(f"s3 {method} {path}: no answer within {timeout:.3g}s") from None
        except requests.RequestException as exc:
            raise ChannelError(f"s3 {method} {path}: {exc}") from None
        if response.status_code not in ok:
            raise ChannelError(f"s3 {method} {path}: HTTP {response.status_code} {_error_code(response)}")
        return response

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket``; fine if it exists and is ours."""
        self._request("PUT", f"/{bucket}", ok=(200, 409))

    def put(self, bucket: str, key: str, data: bytes, timeout: float | None = None) -> None:
        """Store ``data`` at ``key``."""
        self._request("PUT", f"/{bucket}/{key}", body=data, timeout=timeout)

    def get(self, bucket: str, key: str, timeout: float | None = None) -> bytes | None:
        """The object at ``key``, or None when there is none (404)."""
        response = self._request("GET", f"/{bucket}/{key}", ok=(200, 404), timeout=timeout)
        return response.content if response.status_code == 200 else None

    def delete(self, bucket: str, key: str, timeout: float | None = None) -> None:
        """Delete ``key`` (no error when absent)."""
        self._request("DELETE", f"/{bucket}/{key}", ok=(200, 204, 404), timeout=timeout)

    def list(self, bucket: str, prefix: str = "") -> tuple[list[str], int]:
        """(every key under ``prefix``, LIST requests it took), following continuation tokens."""
        keys: list[str] = []
        token, requests_made = "", 0
        while True:
            query = [("list-type", "2"), ("prefix", prefix)] + ([("continuation-token", token)] if token else [])
            root = ET.fromstring(self._request("GET", f"/{bucket}", query).content)
            requests_made += 1
            keys += [c.findtext(f"{_NS}Key") or "" for c in root.iter(f"{_NS}Contents")]
            token = root.findtext(f"{_NS}NextContinuationToken") or ""
            if (root.findtext(f"{_NS}IsTruncated") or "false") != "true" or not token:
                return keys, requests_made


def _error_code(response: requests.Response) -> str:
    try:
        return ET.fromstring(response.content).findtext("Code") or ""
    except ET.ParseError:
        return response.text[:200]
