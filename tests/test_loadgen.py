"""The load generator's bookkeeping: latencies from when a request was due, and from when it was sent."""

from __future__ import annotations

from bench.loadgen import LoadResult


def test_served_percentile_leaves_out_the_generators_own_lateness():
    result = LoadResult(10.0, 1.0, latencies=[0.003, 0.005, 0.004], late=[0.001, 0.002, 0.0005],
                        codes={200: 3})
    assert result.percentile(50) == 0.004
    assert abs(result.served_percentile(50) - 0.003) < 1e-12  # 0.002, 0.003, 0.0035
    other = LoadResult(10.0, 1.0, latencies=[0.010], late=[0.009], codes={200: 1})
    result.merge(other)
    assert len(result.late) == 4 and abs(result.served_percentile(100) - 0.0035) < 1e-12
    assert LoadResult(10.0, 1.0).served_percentile(50) == float("inf")


# The generator against a real HTTP/1.1 server on loopback (http.server, threads) that answers in every way
# the generator must read: Content-Length, chunked, Connection: close, errors, too late, big request bodies.

import http.server
import threading

import pytest

from bench.loadgen import Target, closed_loop, open_loop


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: list[bytes] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.bodies.append(body)
        path = self.path
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hel", b"lo" * 5000, b""):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            return
        status = {"/busy": 503, "/close": 200}.get(path, 200)
        if path == "/slow":
            threading.Event().wait(1.0)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path", ["/", "/chunked", "/close"])
def test_closed_loop_reads_every_kind_of_response(server, path):
    result = closed_loop(Target(server + path, b'{"x":1}'), 4, 0.3)
    assert result.errors == 0 and result.ok == result.sent > 20
    assert len(result.latencies) == result.ok and all(0 < x < 1 for x in result.latencies)


def test_open_loop_sends_at_the_rate_and_counts_codes(server):
    result = open_loop(Target(server + "/busy", b"{}"), 200, 0.5, seed=3)
    assert result.codes == {503: result.sent} and 60 < result.sent < 160
    assert result.ok == 0 and result.failed == result.sent and result.latencies == []


def test_a_callable_body_sends_each_request_its_own_body(server):
    _Handler.bodies.clear()
    big = b"y" * 300_000  # more than one send() takes: the rest goes out when the socket is writable
    result = closed_loop(Target(server + "/", lambda i: big if i % 2 else str(i).encode()), 2, 0.3)
    assert result.errors == 0 and result.ok == result.sent
    assert big in _Handler.bodies and any(b.isdigit() for b in _Handler.bodies)


def test_late_answers_are_errors_and_open_loop_caps_its_connections(server):
    result = open_loop(Target(server + "/slow", b"{}"), 50, 0.3, max_connections=3, timeout=0.3)
    assert result.ok == 0 and result.errors == 3  # three sent, each past the 0.3 s timeout
    assert result.client_overloaded == result.sent - 3 > 0


def test_a_refused_connection_is_an_error_not_a_hang():
    from faas_infer.ports import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    closed = closed_loop(Target(url, b"{}"), 4, 0.2)
    assert closed.ok == 0 and closed.errors > 0
    opened = open_loop(Target(url, b"{}"), 100, 0.2)
    assert opened.ok == 0 and opened.errors == opened.sent > 0
