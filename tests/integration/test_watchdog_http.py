"""The asyncio engine's HTTP/1.1 over raw sockets: what gateways and odd clients send, and what must never
cost another request: keep-alive, pipelining, Expect: 100-continue, HEAD, HTTP/1.0, malformed requests,
slow senders (408) and oversized heads (431)."""

from __future__ import annotations

import re
import socket
import time

import pytest
import requests

from helpers import wait_until, write_handler

HANDLER = """
from batcher import Response

def handle_batch(state, requests):
    return [Response(b"got " + r.body + b" " + r.path.encode(), 200, {"Content-Type": "text/plain"})
            for r in requests]
"""


@pytest.fixture
def wd(tmp_path, watchdogs):
    return watchdogs(write_handler(str(tmp_path / "fn"), HANDLER), max_batch_size=4, read_timeout="1s")


def connect(wd) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", wd.port), timeout=10)
    return sock


def read_response(sock: socket.socket, buf: bytearray, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock`` (``buf`` keeps bytes read past it)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(buf) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buf += chunk
    body = bytes(buf[end + 4:end + 4 + length])
    del buf[:end + 4 + length]
    return status, headers, body


def request(method: str, path: str, body: bytes = b"", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return (f"{method} {path} {version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body

def holding_handler(tmp_path) -> tuple[str, object, object]:
    """A handler folder whose batch holding b"hold" waits for the ``release`` file (20 s at most), each
    batch's bodies appended to the ``seen`` file: (folder, release, seen)."""
    seen, release = tmp_path / "seen", tmp_path / "release"
    folder = write_handler(str(tmp_path / "hold"), f"""
import os, time
def handle_batch(state, requests):
    with open({str(seen)!r}, "a") as f:
        f.write(" ".join(r.body.decode() for r in requests) + "\\n")
    if any(r.body == b"hold" for r in requests):
        deadline = time.monotonic() + 20
        while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
    return [r.body for r in requests]
""")
    return folder, release, seen



def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order_on_one_connection(wd):
    sock, buf = connect(wd), bytearray()
    sock.sendall(b"".join(request("POST", f"/p{i}", f"b{i}".encode()) for i in range(10)))
    for i in range(10):
        status, headers, body = read_response(sock, buf)
        assert (status, body) == (200, f"got b{i} /p{i}".encode())
        assert float(headers["x-duration-seconds"]) >= 0 and "date" in headers


def test_expect_100_continue_gets_an_interim_answer_before_the_body(wd):
    sock, buf = connect(wd), bytearray()
    sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = read_response(sock, buf)
    assert status == 100
    sock.sendall(b"hello")
    assert read_response(sock, buf)[0::2] == (200, b"got hello /c")


def test_head_has_headers_and_no_body_and_http10_closes(wd):
    sock, buf = connect(wd), bytearray()
    sock.sendall(request("HEAD", "/h") + request("POST", "/after", b"a"))
    status, headers, _ = read_response(sock, buf, head_only=True)  # Content-Length announced, no body sent
    assert status == 200 and int(headers["content-length"]) == len(b"got  /h")
    assert read_response(sock, buf)[0::2] == (200, b"got a /after")  # the next answer starts right there
    sock, buf = connect(wd), bytearray()
    sock.sendall(request("POST", "/old", b"x", version="HTTP/1.0"))
    status, headers, body = read_response(sock, buf)
    assert (status, body, headers.get("connection")) == (200, b"got x /old", "close")
    assert closed(sock)


@pytest.mark.parametrize("raw, status, words, method", [  # the method counted once the request line was read
    (b"GARBAGE\r\n\r\n", 400, "malformed request line", "unknown"),
    (b"POST / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "unsupported protocol", "post"),
    (b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "Content-Length must be a number", "post"),
    (b"PUT / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413, "over max_request_bytes", "put"),
    (b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header line", "post"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed chunk size", "post"),
    (b"POST / HTTP/1.1\r\nX-Big: " + b"a" * 70000, 431, "request head over", "unknown"),
    (b"POST / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, "request head over", "unknown"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nok", 501, "chunked only", "post"),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "both Content-Length and Transfer-Encoding", "post"),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400, "bare LF", "unknown"),
    (b"GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n", 400, "bare LF", "unknown"),
    # a digit int() refuses ended the connection with no answer; lenient chunk sizes are framed differently
    # by a proxy in front; gunicorn's engine refuses all of these too
    (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\nab", 400, "Content-Length must be a number", "post"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400,
     "malformed chunk size", "post"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", 400,
     "malformed chunk size", "post"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n", 400, "malformed chunk size", "post"),
    (b"G\xc9T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed method", "unknown"),
    (b"GET / HTTP/1.1\r\nX Foo: 1\r\n\r\n", 400, "malformed header name", "get"),
    (b"GET / HTTP/1.1\r\nX-Ctl: a\x00b\r\n\r\n", 400, "control character", "get"),
    (b"GET / HTTP/1.1\r\nX-Ctl: a\x7fb\r\n\r\n", 400, "control character", "get"),
    # trailers that never end were buffered without bound until read_timeout
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + b"a" * 70000, 431, "trailers over",
     "post"),
])
def test_malformed_requests_get_a_clear_error_and_cost_nobody_else(wd, raw, status, words, method):
    other = connect(wd)  # a well-behaved client on its own connection, mid-conversation
    other_buf = bytearray()
    other.sendall(request("POST", "/ok", b"1"))
    assert read_response(other, other_buf)[0] == 200
    sock, buf = connect(wd), bytearray()
    sock.sendall(raw)
    got, headers, body = read_response(sock, buf)
    assert got == status and words in body.decode() and headers.get("connection") == "close"
    assert float(headers["x-duration-seconds"]) >= 0  # every response carries it (the contract)
    assert closed(sock)
    assert f'http_requests_total{{code="{status}",method="{method}"}} 1' in requests.get(wd.metrics_url, timeout=5).text
    other.sendall(request("POST", "/ok", b"2"))
    assert read_response(other, other_buf)[0::2] == (200, b"got 2 /ok")


def test_a_204_or_304_with_a_body_from_the_handler_sends_none_and_the_next_answer_is_intact(tmp_path, watchdogs):
    # The body went out after the head: a client reads none after a 204 or 304, so on a kept-alive connection
    # (a gateway's, shared by callers) those bytes became the start of the next caller's answer.
    folder = write_handler(str(tmp_path / "st"), """
from batcher import Response

def handle_batch(state, requests):
    return [Response(b"stray", int(r.path[1:])) if r.path != "/ok" else Response(b"next", 200) for r in requests]
""")
    wd = watchdogs(folder, max_batch_size=1)
    for status in (204, 304):
        sock, buf = connect(wd), bytearray()
        sock.sendall(request("POST", f"/{status}") + request("POST", "/ok"))
        got, headers, _ = read_response(sock, buf, head_only=True)
        assert got == status and "content-length" not in headers
        assert read_response(sock, buf)[0::2] == (200, b"next")
        assert requests.post(wd.url + f"/{status}", timeout=5).content == b""


def test_health_and_ready_carry_x_duration_seconds(wd):
    for path in ("/_/health", "/_/ready"):
        got = requests.get(wd.url + path, timeout=5)
        assert got.status_code == 200 and float(got.headers["X-Duration-Seconds"]) >= 0


@pytest.mark.parametrize("engine", ["asyncio", "gthread"])
@pytest.mark.parametrize("backend", ["local", "redis"])
def test_a_client_gone_while_its_request_is_queued_frees_its_slot_and_it_never_runs(tmp_path, watchdogs, backend,
                                                                                   engine, redis_server, redis_client):
    folder, release, seen = holding_handler(tmp_path)
    shared = {}
    if backend == "redis":  # taken back from Redis, it must not run as a copy either
        shared = {"batch_backend": "redis", "redis_url": redis_server.url, "function_name": "abandon"}
    wd = watchdogs(folder, max_batch_size=1, max_inflight=2, http_engine=engine, **shared)
    holder, holder_buf = connect(wd), bytearray()
    holder.sendall(request("POST", "/", b"hold"))
    wait_until(lambda: seen.exists(), 10, what="the first request running")
    gone = connect(wd)
    gone.sendall(request("POST", "/", b"gone"))
    wait_until(lambda: "http_requests_in_flight 2" in requests.get(wd.metrics_url, timeout=5).text, 10,
               what="the second request queued")
    gone.close()
    wait_until(lambda: 'faas_infer_requests_refused_total{reason="abandoned"} 1'
               in requests.get(wd.metrics_url, timeout=5).text, 10, what="the gone client noticed")
    third, third_buf = connect(wd), bytearray()
    third.sendall(request("POST", "/", b"third"))  # 429 if the gone client still held its slot
    time.sleep(0.2)
    release.write_text("")
    assert read_response(holder, holder_buf)[0::2] == (200, b"hold")
    assert read_response(third, third_buf)[0::2] == (200, b"third")
    assert seen.read_text().split() == ["hold", "third"]


@pytest.mark.parametrize("engine", ["asyncio", "gthread"])
def test_a_request_whose_client_is_gone_no_longer_counts_against_max_queue(tmp_path, watchdogs, engine):
    # The dropped request stayed in the queue until a batch was taken: a live caller behind it was refused
    # with 503 "queue full" for a request that would never run.
    folder, release, _ = holding_handler(tmp_path)
    wd = watchdogs(folder, max_batch_size=1, max_queue=1, http_engine=engine)
    holder, holder_buf = connect(wd), bytearray()
    holder.sendall(request("POST", "/", b"hold"))
    wait_until(lambda: "faas_infer_queue_depth 0" in requests.get(wd.metrics_url, timeout=5).text
               and "http_requests_in_flight 1" in requests.get(wd.metrics_url, timeout=5).text, 10,
               what="the first request running")
    gone = connect(wd)
    gone.sendall(request("POST", "/", b"gone"))
    wait_until(lambda: "faas_infer_queue_depth 1" in requests.get(wd.metrics_url, timeout=5).text, 10,
               what="the second request queued")
    gone.close()
    wait_until(lambda: "faas_infer_queue_depth 0" in requests.get(wd.metrics_url, timeout=5).text, 10,
               what="the gone client's request out of the queue")
    third, third_buf = connect(wd), bytearray()
    third.sendall(request("POST", "/", b"third"))  # 503 "queue full" while the gone one still counted
    time.sleep(0.2)
    release.write_text("")
    assert read_response(holder, holder_buf)[0::2] == (200, b"hold")
    assert read_response(third, third_buf)[0::2] == (200, b"third")


@pytest.mark.parametrize("engine", ["asyncio", "gthread"])
def test_a_client_that_half_closes_while_queued_gets_no_answer_and_no_count_in_both_engines(tmp_path, watchdogs,
                                                                                             engine):
    # gthread wrote "499 Unknown" (no such reason, no X-Duration-Seconds) to a client taken for gone, and the
    # asyncio engine closed without a word: a client that only half-closed saw the two engines differ.
    folder, release, _ = holding_handler(tmp_path)
    wd = watchdogs(folder, max_batch_size=1, http_engine=engine)
    holder, holder_buf = connect(wd), bytearray()
    holder.sendall(request("POST", "/", b"hold"))
    wait_until(lambda: "http_requests_in_flight 1" in requests.get(wd.metrics_url, timeout=5).text, 10,
               what="the first request running")
    gone = connect(wd)
    gone.sendall(request("POST", "/", b"gone"))
    wait_until(lambda: "faas_infer_queue_depth 1" in requests.get(wd.metrics_url, timeout=5).text, 10,
               what="the second request queued")
    gone.shutdown(socket.SHUT_WR)
    wait_until(lambda: 'faas_infer_requests_refused_total{reason="abandoned"} 1'
               in requests.get(wd.metrics_url, timeout=5).text, 10, what="the gone client noticed")
    assert gone.recv(1024) == b""  # closed, nothing written
    release.write_text("")
    assert read_response(holder, holder_buf)[0::2] == (200, b"hold")
    metrics = requests.get(wd.metrics_url, timeout=5).text
    assert 'code="499"' not in metrics and 'http_requests_total{code="200",method="post"} 1' in metrics
    assert "Traceback" not in wd.log()


def test_slow_sender_gets_408_after_read_timeout_and_others_are_served_meanwhile(wd):
    slow, buf = connect(wd), bytearray()
    slow.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
    started = time.monotonic()
    assert requests.post(wd.url + "/fast", data=b"f", timeout=5).text == "got f /fast"
    status, _, body = read_response(slow, buf)
    assert status == 408 and b"read_timeout=1s" in body
    assert time.monotonic() - started >= 0.9
    assert closed(slow)


def test_client_that_disconnects_while_its_batch_runs_costs_nobody_else(tmp_path, watchdogs):
    slow = write_handler(str(tmp_path / "slow"), """
import time
def handle_batch(state, requests):
    time.sleep(0.3)
    return [r.body for r in requests]
""")
    wd = watchdogs(slow, max_batch_size=4)
    for _ in range(3):
        sock = connect(wd)
        sock.sendall(request("POST", "/", b"gone"))
        sock.close()
    assert requests.post(wd.url, data=b"stays", timeout=10).content == b"stays"


def test_a_client_pipelining_far_ahead_is_throttled_and_every_request_still_answered(tmp_path, watchdogs):
    slow = write_handler(str(tmp_path / "slow"), """
import time
def handle_batch(state, requests):
    time.sleep(0.05)
    return [r.body for r in requests]
""")
    wd = watchdogs(slow, max_batch_size=1, max_request_bytes="1Ki")
    sock, buf = connect(wd), bytearray()
    burst = b"".join(request("POST", "/", b"%04d" % i) for i in range(2000))  # ~150 KB ahead of its answers
    sock.sendall(burst)
    for i in (0, 1, 2):
        assert read_response(sock, buf)[0::2] == (200, b"%04d" % i)
    assert requests.post(wd.url, data=b"other client", timeout=10).content == b"other client"
    sock.close()


def test_a_client_that_reads_no_answers_is_not_answered_ahead_and_gets_them_all_once_it_reads(tmp_path, watchdogs):
    # Every pipelined request was answered into the transport's buffer whether or not the client read:
    # 3,000 requests for a 1 MB answer grew the worker by 1.8 GB.
    big = write_handler(str(tmp_path / "big"), """
def handle_batch(state, requests):
    return [r.body * 1_000_000 for r in requests]
""")
    wd = watchdogs(big, max_batch_size=1)
    sock, buf = connect(wd), bytearray()
    sock.sendall(b"".join(request("POST", "/", b"%d" % (i % 10)) for i in range(100)))

    def answered() -> int:
        found = re.search(r'^http_requests_total{code="200",method="post"} (\d+)', requests.get(wd.metrics_url,
                                                                                                timeout=5).text, re.M)
        return int(found.group(1)) if found else 0

    wait_until(lambda: answered() > 0, 10, what="the first answer")
    time.sleep(1)  # time for the whole backlog, had it not waited for the client
    assert answered() < 20  # what the socket buffers hold, not the 100 MB asked for
    for i in range(100):
        assert read_response(sock, buf)[0::2] == (200, b"%d" % (i % 10) * 1_000_000)
    sock.close()


def test_a_handler_hung_inline_on_the_loop_ends_the_worker_and_a_fresh_one_serves(tmp_path, watchdogs):
    # A predicted-fast request runs on the event loop itself; one that never returned froze the instance for
    # good: no 504, no /_/health answer.
    folder = write_handler(str(tmp_path / "hang"), """
        import time

        def handle_batch(state, requests):
            if any(r.body == b"hang" for r in requests):
                time.sleep(600)
            return [b"ok" for _ in requests]
    """)
    wd = watchdogs(folder, exec_timeout="1s")
    for _ in range(3):  # known to be fast, at a low rate: the next request runs inline
        assert requests.post(wd.url, data=b"x", timeout=5).text == "ok"
        time.sleep(0.1)
    with pytest.raises(requests.ConnectionError):
        requests.post(wd.url, data=b"hang", timeout=10)
    wait_until(lambda: requests.get(wd.url + "/_/ready", timeout=1).status_code == 200, 30, what="a new worker")
    assert requests.post(wd.url, data=b"x", timeout=5).text == "ok"
    assert "blocked the event loop" in wd.log() and "past the request timeout of 1s" in wd.log()


@pytest.mark.parametrize("exec_timeout", ["1s", "0", "30s"])  # 0 and 30s: write_timeout (1s) is what bounds it
def test_an_async_handler_hung_inline_is_cancelled_at_exec_timeout_without_the_guard_ending_the_worker(
        tmp_path, watchdogs, exec_timeout):
    # exec_timeout is write_timeout (the default): the guard saw the inline batch past that limit before its
    # cancellation (timed from just after the batch began, then a turn of the handler's loop and the
    # coroutine's own cleanup) had ended it, and ended a worker that was about to serve on.
    folder = write_handler(str(tmp_path / "hang"), """
        import asyncio

        async def handle_batch(state, requests):
            if any(r.body == b"hang" for r in requests):
                try:
                    await asyncio.sleep(600)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.4)  # closing what it held (a client session, a connection)
                    raise
            return [b"ok" for _ in requests]
    """)
    wd = watchdogs(folder, exec_timeout=exec_timeout, write_timeout="1s")
    for _ in range(3):  # known to be fast, at a low rate: the next request runs inline
        assert requests.post(wd.url, data=b"x", timeout=5).text == "ok"
        time.sleep(0.1)
    hung = requests.post(wd.url, data=b"hang", timeout=10)
    assert hung.status_code == 504
    assert requests.post(wd.url, data=b"x", timeout=5).text == "ok"
    assert "blocked the event loop" not in wd.log()


def test_a_slow_first_call_with_a_prior_is_not_run_on_the_loop(tmp_path, watchdogs):
    # The autoscaler sets exec_prior on every variant; a prior alone made the first call (here a 3 s warm-up)
    # run inline, the guard ended the worker, and every new worker did the same: nothing was ever served.
    folder = write_handler(str(tmp_path / "warm"), """
        import time
        WARM = []

        def handle_batch(state, requests):
            if not WARM:
                time.sleep(3)
                WARM.append(1)
            return [b"ok" for _ in requests]
    """)
    wd = watchdogs(folder, exec_timeout="2s", exec_prior="1:0.002,8:0.006")
    first = requests.post(wd.url, data=b"x", timeout=10)
    assert first.status_code == 504  # past exec_timeout, answered: the worker lives on
    time.sleep(1.5)  # the warm-up ends
    assert [requests.post(wd.url, data=b"x", timeout=5).text for _ in range(5)] == ["ok"] * 5
    assert "blocked the event loop" not in wd.log()
