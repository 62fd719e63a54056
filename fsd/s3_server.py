"""A small S3-compatible server for tests and the benchmark: objects in memory, path-style requests.

Supports PUT/GET/HEAD/DELETE object, PUT bucket and ListObjectsV2 (GET /bucket?list-type=2&prefix=),
with S3's XML error bodies. Given credentials it checks SigV4 signatures (403 SignatureDoesNotMatch).
It is a stand-in on a loopback port: production deployments point the channel at real S3 or MinIO.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

from fsd.sigv4 import Credentials, canonical_request, signature

_AUTH = re.compile(r"Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, *SignedHeaders=([^,]+), *"
                   r"Signature=([0-9a-f]{64})")
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


class ObjectStore:
    """Buckets of objects, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, dict[str, bytes]] = {}


class S3Server:
    """A running server: ``start()``, ``url``, ``stop()``."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", credentials: Credentials | None = None) -> None:
        self.store = ObjectStore()
        handler = type("Handler", (_Handler,), {"store": self.store, "credentials": credentials})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="s3-server", daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "S3Server":
        """Serve on a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    store: ObjectStore
    credentials: Credentials | None
    protocol_version = "HTTP/1.1"
    # Buffer each response into one write (flushed by the base class) and send it at once: without
    # both, headers and body leave as separate segments and delayed ACKs add ~40 ms per request.
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass

    def _parts(self) -> tuple[str, str, list[tuple[str, str]]]:
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return bucket, key, parse_qsl(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>".encode()
        self._send(status, body)

    def _authorized(self, body: bytes) -> bool:
        if self.credentials is None:
            return True
        match = _AUTH.search(self.headers.get("Authorization", ""))
        payload_hash = self.headers.get("x-amz-content-sha256", "")
        if not match or match.group(1) != self.credentials.access_key:
            self._error(403, "InvalidAccessKeyId", "unknown or missing access key")
            return False
        if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
            self._error(400, "XAmzContentSHA256Mismatch", "payload hash does not match the body")
            return False
        names = match.group(5).split(";")
        headers = {n: self.headers.get(n, "") for n in names}
        _, _, query = self._parts()
        canonical, _ = canonical_request(self.command, unquote(urlsplit(self.path).path), query, headers,
                                         payload_hash)
        if signature(self.credentials, self.headers.get("x-amz-date", ""), canonical) != match.group(6):
            self._error(403, "SignatureDoesNotMatch", "the signature does not match")
            return False
        return True

    def _handle(self) -> None:
        body = self._body() if self.command == "PUT" else b""
        if not self._authorized(body):
            return
        bucket, key, query = self._parts()
        with self.store.lock:
            objects = self.store.buckets.get(bucket)
            if self.command == "PUT" and not key:
                self.store.buckets.setdefault(bucket, {})
                return self._send(200)
            if objects is None:
                return self._error(404, "NoSuchBucket", f"no bucket {bucket!r}")
            if not key and self.command == "GET":
                return self._send(200, _listing(bucket, objects, dict(query)))
            if self.command == "PUT":
                objects[key] = body
                return self._send(200)
            if self.command == "DELETE":
                objects.pop(key, None)
                return self._send(204)
            if key not in objects:
                return self._error(404, "NoSuchKey", f"no object {key!r}")
            return self._send(200, objects[key], "application/octet-stream")

    do_GET = do_PUT = do_DELETE = do_HEAD = _handle


def _listing(bucket: str, objects: dict[str, bytes], query: dict[str, str], page: int = 1000) -> bytes:
    prefix = query.get("prefix", "")
    keys = sorted(k for k in objects if k.startswith(prefix))
    start = query.get("continuation-token", "")
    if start:
        keys = [k for k in keys if k > start]
    shown, truncated = keys[:page], len(keys) > page
    contents = "".join(f"<Contents><Key>{escape(k)}</Key><Size>{len(objects[k])}</Size></Contents>"
                       for k in shown)
    token = f"<NextContinuationToken>{escape(shown[-1])}</NextContinuationToken>" if truncated else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{_XMLNS}"><Name>{escape(bucket)}'
            f"</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(shown)}</KeyCount>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{token}{contents}"
            "</ListBucketResult>").encode()
