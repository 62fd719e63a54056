"""Invoking workers over HTTP: a hung call must not hold up the next job's calls."""

from __future__ import annotations

import socket
import time

import pytest

from fsd.errors import WorkerFailed
from fsd.invoke import HttpInvoker
from fsd.worker import JobSpec
from helpers import silent_listener


@pytest.fixture
def silent_url():
    """The URL of a loopback socket that accepts connections and never answers (a blackholed worker)."""
    with silent_listener() as port:
        yield f"http://127.0.0.1:{port}"
    # closing it resets the hung connections, so their threads end now


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there: refused at once


def test_hung_calls_do_not_delay_the_next_jobs_calls(silent_url):
    invoker = HttpInvoker([silent_url, _closed_url()])
    hung = [invoker.submit(JobSpec(f"dead{k}", 0, 1, 20.0, time.time() + 20)) for k in range(3)]  # hang 23 s
    time.sleep(0.2)
    started = time.monotonic()
    nxt = invoker.submit(JobSpec("next", 1, 1, 20.0, time.time() + 20))
    with pytest.raises(WorkerFailed, match="rank 1 at .*: unreachable"):
        nxt.result(timeout=30)
    assert time.monotonic() - started < 10  # at once, not after the hung calls' 23 s
    assert not any(f.done() for f in hung)


def test_a_hung_rank_costs_a_bounded_number_of_threads(silent_url):
    invoker = HttpInvoker([silent_url], max_outstanding=2)
    hung = [invoker.submit(JobSpec(f"dead{k}", 0, 1, 20.0, time.time() + 20)) for k in range(2)]
    refused = invoker.submit(JobSpec("next", 0, 1, 20.0, time.time() + 20))
    with pytest.raises(WorkerFailed, match="rank 0 at .*: 2 calls still unanswered"):
        refused.result(timeout=1)
    assert not any(f.done() for f in hung)


@pytest.fixture
def slow_gateway():
    """A loopback HTTP server answering every POST with an empty worker report after 0.2 s: W ranks behind
    one gateway, all called at once."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            rank = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["rank"]
            time.sleep(0.2)
            body = json.dumps({"rank": rank, "seconds": 0.2, "compute_seconds": 0, "wait_seconds": 0.2}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sixteen_ranks_behind_one_gateway_keep_their_connections(slow_gateway, caplog):
    # requests' pool keeps 10 connections a host: with W = 16 through one gateway every job opened 6 new
    # connections and logged 'Connection pool is full, discarding connection' 6 times.
    invoker = HttpInvoker([f"{slow_gateway}/function/dnn-worker-{r}" for r in range(16)])
    for job in ("a", "b"):
        futures = [invoker.submit(JobSpec(job, r, 1, 5.0, time.time() + 5)) for r in range(16)]
        assert [f.result(timeout=10).rank for f in futures] == list(range(16))
    assert "Connection pool is full" not in caplog.text
