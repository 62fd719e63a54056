"""Both HTTP engines (asyncio, gthread) as real watchdogs: the same bytes on the wire give a handler the same
request (method, path, query, headers, body), recorded gateway traffic included."""

from __future__ import annotations

import base64
import json
import os
import re
import socket

import pytest

from helpers import REPO, write_handler

HANDLER = """
import base64
from batcher import Response

def handle_batch(state, requests):
    return [Response(b"mine", 200, {"X-Duration-Seconds": "99", "X-Mine": "1"}) if r.path == "/own-duration" else
            {"method": r.method, "path": r.path, "query": r.query, "headers": dict(r.headers),
             "body": base64.b64encode(r.body).decode()} for r in requests]
"""

FIXTURES = os.path.join(REPO, "tests", "fixtures", "openfaas", "gateway-to-provider")

# Odd but valid requests a gateway, faas-cli or a browser may send.
ODD = {
    "percent-encoded path and query": b"GET /a%20b/caf%C3%A9%2Fx/p%41th?q=%C3%A9&q=2&p=a+b&e= HTTP/1.1\r\n"
                                      b"Host: x\r\n\r\n",
    "invalid UTF-8 escapes and dots": b"GET /%FF%2e%2E/..%3F%23 HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute form": b"GET http://fn.openfaas-fn:8080/abs/%7Euser?y=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "empty body, Content-Length 0, odd headers": b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                                 b"X-Utf: caf\xc3\xa9\r\nX-Dup: 1\r\nX-Dup: 2\r\nx-api-key: k\r\n"
                                                 b"X-Space:   padded  \r\nX-Empty:\r\n\r\n",
    "chunked body": b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    "double slashes and a bare ?": b"DELETE //double//slash/? HTTP/1.1\r\nHost: x\r\nX-Call-Id: abc\r\n\r\n",
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """One watchdog per engine, serving the handler that reports what it was given."""
    from helpers import WatchdogProcess

    root = tmp_path_factory.mktemp("engines")
    folder = write_handler(str(root / "fn"), HANDLER)
    started = []
    try:
        for engine in ("asyncio", "gthread"):
            run_dir = root / engine
            run_dir.mkdir()
            started.append(WatchdogProcess(folder, {"http_engine": engine, "max_batch_size": "4"}).start(str(run_dir)))
        yield started
    finally:
        for proc in started:
            proc.stop(10)


def exchange(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` on a fresh connection asking to close it; the status and body of the answer."""
    raw = raw.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def seen(port: int, raw: bytes) -> dict:
    status, body = exchange(port, raw)
    assert status == 200, body
    return json.loads(body)


def both(engines, raw: bytes) -> dict:
    """What the handler saw under each engine, asserted equal; returns it."""
    first, second = (seen(wd.port, raw) for wd in engines)
    assert first == second
    return first


@pytest.mark.parametrize("name", list(ODD))
def test_the_same_bytes_give_the_handler_the_same_request_under_both_engines(engines, name):
    both(engines, ODD[name])


def test_the_path_is_decoded_as_utf8_and_the_query_left_as_sent(engines):
    got = both(engines, ODD["percent-encoded path and query"])
    assert (got["path"], got["query"]) == ("/a b/café/x/pAth", "q=%C3%A9&q=2&p=a+b&e=")
    assert both(engines, ODD["invalid UTF-8 escapes and dots"])["path"] == "/\ufffd../..?#"
    assert both(engines, ODD["absolute form"])["path"] == "/abs/~user"


def test_headers_and_bodies_reach_the_handler_alike(engines):
    got = both(engines, ODD["empty body, Content-Length 0, odd headers"])
    assert got["body"] == "" and got["headers"]["Content-Length"] == "0"
    assert {k: got["headers"][k] for k in ("X-Utf", "X-Dup", "X-Api-Key", "X-Space", "X-Empty")} == \
        {"X-Utf": "caf\xc3\xa9", "X-Dup": "1,2", "X-Api-Key": "k", "X-Space": "padded", "X-Empty": ""}
    assert base64.b64decode(both(engines, ODD["chunked body"])["body"]) == b"abcde"


@pytest.mark.parametrize("raw, status, words", [
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"must start with '/'"),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, b""),
    # gunicorn decoded the chunks and handed the handler the still-gzipped bytes as if plain
    (b"POST /z HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", 501,
     b"chunked only"),
])
def test_a_request_no_handler_could_be_given_is_refused_alike_under_both_engines(engines, raw, status, words):
    for wd in engines:
        got, body = exchange(wd.port, raw)
        assert got == status and words in body, (wd.env, body)


def test_recorded_gateway_invocations_reach_the_handler_alike(engines):
    for name in sorted(os.listdir(FIXTURES)):
        if not name.startswith("invoke-"):
            continue
        with open(os.path.join(FIXTURES, name)) as f:
            exchanges = json.load(f)
        for ex in exchanges:
            req = ex["request"]
            body = base64.b64decode(req["body"]) if req["body_encoding"] == "base64" else req["body"].encode()
            headers = dict(req["headers"])
            if "chunk_sizes" in req:  # sent as the gateway sent it: chunked, in its chunks
                framed, at = bytearray(), 0
                for size in req["chunk_sizes"]:
                    framed += b"%x\r\n" % size + body[at:at + size] + b"\r\n"
                    at += size
                framed += b"0\r\n\r\n"
            else:
                framed = bytearray(body)
            head = f"{req['method']} {req['path']} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            got = both(engines, head.encode("latin-1") + b"\r\n" + bytes(framed))
            assert base64.b64decode(got["body"]) == body, name
            assert got["path"] == req["path"].partition("?")[0], name
            assert got["headers"]["X-Call-Id"] == headers["X-Call-Id"], name


@pytest.mark.parametrize("raw", [b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /_/ready HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /fn HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_every_answer_carries_x_duration_seconds_under_both_engines(engines, raw):
    for wd in engines:
        with socket.create_connection(("127.0.0.1", wd.port), timeout=10) as sock:
            sock.sendall(raw.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
            data = bytearray()
            while chunk := sock.recv(65536):
                data += chunk
        head = bytes(data).partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        assert re.search(r"\r\nx-duration-seconds: \d+\.\d+\r\n", head + "\r\n"), (wd.env, head)


def test_a_handlers_own_x_duration_seconds_is_replaced_by_the_watchdogs(engines):
    # as of-watchdog sets it over the function's: two values, and a client reads whichever it reads first
    for wd in engines:
        with socket.create_connection(("127.0.0.1", wd.port), timeout=10) as sock:
            sock.sendall(b"GET /own-duration HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = bytearray()
            while chunk := sock.recv(65536):
                data += chunk
        lines = bytes(data).partition(b"\r\n\r\n")[0].decode("latin-1").lower().split("\r\n")
        durations = [line for line in lines if line.startswith("x-duration-seconds:")]
        assert len(durations) == 1 and durations[0] != "x-duration-seconds: 99", (wd.env, lines)
        assert "x-mine: 1" in lines


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("path", ["/_/health", "/_/ready"])
def test_the_probes_answer_405_to_all_but_get_under_both_engines_as_of_watchdog(engines, method, path):
    # Handed to the function, a probe sent with the wrong method ran a batch and got the handler's answer.
    for wd in engines:
        raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        with socket.create_connection(("127.0.0.1", wd.port), timeout=10) as sock:
            sock.sendall(raw)
            data = bytearray()
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        assert lines[0] == "http/1.1 405 method not allowed" and "allow: get" in lines, (wd.env, lines)
        assert any(line.startswith("x-duration-seconds: ") for line in lines), (wd.env, lines)
        assert body == (b"" if method == "HEAD" else f"method {method} not allowed on {path}\n".encode()), wd.env
