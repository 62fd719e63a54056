"""The proxy's connections to a replica against a real HTTP server process that closes keep-alive connections:
which failed requests go again (Go's Transport rule), and that a POST the replica may have had never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
import urllib3

from faas_infer.ports import free_port
from helpers import wait_until
from provider.catalog import Catalog
from provider.config import ProviderConfig
from provider.function import FunctionState, Limits
from provider.metrics import GatewayMetrics
from provider.proxy import Proxy
from provider.replica import LaunchSpec, Replica, State
from provider.runtime import Runtime
from provider.types import FunctionDeployment
from provider.upstream import Closed, Upstream

# A keep-alive HTTP/1.1 server. Each request it reads whole is logged (a JSON line) and answered, but:
# "close-kept": a request that comes on a connection used before is read whole, then the connection is reset
#   unanswered (what a replica does that reads a request and dies, or, as the proxy sees it, one that closed
#   the idle connection as the request came: nothing on the proxy's side tells these apart);
# "reset-body": the first connection is reset once the head of a request is read, before its body;
# "slow": every request is answered 0.3 s after it is read (requests sent together overlap).
SERVER = r"""
import json, socket, sys, threading, time

port, mode, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
first = [True]


def reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


def serve(conn):
    buf, answered = b"", 0
    with lock:
        is_first, first[0] = first[0], False
    while True:
        data = conn.recv(65536)
        if not data:
            conn.close()
            return
        buf += data
        if b"\r\n\r\n" not in buf:
            continue
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next((int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:")), 0)
        if mode == "reset-body" and is_first:
            reset(conn)
            return
        rest = bytearray(rest)
        while len(rest) < length:
            more = conn.recv(1 << 20)
            if not more:
                conn.close()
                return
            rest += more
        body, buf = rest[:length], bytes(rest[length:])
        method = lines[0].split()[0]
        kept = mode == "close-kept" and answered > 0
        with lock, open(log, "a") as f:
            f.write(json.dumps({"method": method, "size": len(body), "answered": not kept}) + "\n")
        if kept:
            reset(conn)
            return
        if mode == "slow":
            time.sleep(0.3)
        answer = json.dumps({"method": method, "size": len(body)}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(answer), answer))
        answered += 1


listener = socket.create_server(("127.0.0.1", port))
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


class Server:
    """The server above as a real process on a free loopback port."""

    def __init__(self, tmp: str, mode: str) -> None:
        self.port = free_port()
        self.log = os.path.join(tmp, f"requests-{mode}.log")
        script = os.path.join(tmp, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        self.proc = subprocess.Popen([sys.executable, script, str(self.port), mode, self.log],
                                     stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout.readline() == b"ready\n"

    def received(self) -> list[dict]:
        """The requests it read whole."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()


@pytest.fixture
def server(tmp_path, request):
    srv = Server(str(tmp_path), request.param)
    yield srv
    srv.stop()


@pytest.mark.parametrize("server", ["close-kept"], indirect=True)
def test_a_reused_connection_closed_before_an_answer_is_told_apart(server):
    upstream = Upstream(server.port)
    try:
        assert upstream.exchange("POST", "/", {}, b"one", 5)[0] == 200
        with pytest.raises(Closed) as caught:  # read on the kept connection, then reset unanswered
            upstream.exchange("POST", "/", {}, b"two", 5)
        assert caught.value.retry is False  # a POST: the replica may have had it
        for method, headers, retry in (("GET", {}, True), ("POST", {"Idempotency-Key": "k1"}, True),
                                       ("PUT", {}, False)):
            assert upstream.exchange(method, "/", headers, b"", 5)[0] == 200  # a fresh connection: no reuse
            with pytest.raises(Closed) as caught:
                upstream.exchange(method, "/", headers, b"", 5)
            assert caught.value.retry is retry, method
        assert [(r["method"], r["answered"]) for r in server.received()] == [
            ("POST", True), ("POST", False), ("GET", True), ("GET", False), ("POST", True), ("POST", False),
            ("PUT", True), ("PUT", False)]
    finally:
        upstream.close()


def one_replica_runtime(tmp: str, port: int, proc: subprocess.Popen) -> tuple[Runtime, FunctionState]:
    """A runtime (not started) whose function ``fn`` has one ready replica: the server process on ``port``."""
    runtime = Runtime(ProviderConfig(run_dir=os.path.join(tmp, "run"), cold_start_timeout=2), Catalog(), {})
    spec = FunctionDeployment(service="fn", image="test/fn:1")
    fn = FunctionState(spec, tmp, Limits(), runtime.lock)
    launch = LaunchSpec("fn", "fn-server", 1, tmp, os.path.join(tmp, "run", "fn-server"), {})
    fn.replicas.append(Replica(launch, proc, port, 0, state=State.READY, upstream=Upstream(port),
                               pool=urllib3.HTTPConnectionPool("127.0.0.1", port, retries=False)))
    runtime.functions["fn"] = fn
    return runtime, fn


@pytest.mark.parametrize("server", ["close-kept"], indirect=True)
def test_the_proxy_sends_a_get_again_after_a_reused_connection_closed_but_never_a_post(server, tmp_path):
    runtime, fn = one_replica_runtime(str(tmp_path), server.port, server.proc)
    proxy = Proxy(runtime, GatewayMetrics("openfaas-fn"))
    try:
        assert proxy.forward(fn, "GET", "/", {}, b"")[0] == 200
        status, _, body = proxy.forward(fn, "GET", "/", {}, b"")  # read, reset unanswered: sent again
        assert status == 200 and json.loads(body)["method"] == "GET"
        status, _, body = proxy.forward(fn, "POST", "/", {}, b"payload")  # reset again: not sent twice
        assert status == 500
        text = body.decode()
        assert text.startswith("Can't reach service for: fn. Replica fn-server failed: it closed a reused "
                               "keep-alive connection before answering") and "a POST is not sent twice" in text
        assert [(r["method"], r["answered"]) for r in server.received()] == [
            ("GET", True), ("GET", False), ("GET", True), ("POST", False)]  # the POST reached it once
        assert fn.replicas[0].outstanding == 0
    finally:
        runtime.release_replica(fn.replicas[0])
        runtime.logs.close()


@pytest.mark.parametrize("server", ["reset-body"], indirect=True)
def test_the_proxy_sends_a_post_again_when_it_could_not_be_written_whole(server, tmp_path):
    runtime, fn = one_replica_runtime(str(tmp_path), server.port, server.proc)
    proxy = Proxy(runtime, GatewayMetrics("openfaas-fn"))
    body = b"x" * (32 * 1024 * 1024)  # more than the socket buffers hold: the reset comes while it is written
    try:
        status, _, answer = proxy.forward(fn, "POST", "/", {}, body)
        assert status == 200 and json.loads(answer) == {"method": "POST", "size": len(body)}, answer
        assert server.received() == [{"method": "POST", "size": len(body), "answered": True}]  # had it once
    finally:
        runtime.release_replica(fn.replicas[0])
        runtime.logs.close()


def open_to(port: int) -> int:
    """Sockets of this process connected to ``port`` (whatever their state, CLOSE_WAIT included)."""
    return sum(1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port)


@pytest.mark.parametrize("server", ["slow"], indirect=True)
def test_idle_connections_are_closed_once_past_idle_seconds_not_only_the_one_reused(server):
    # A burst leaves many idle connections; later requests reuse only the newest. The older ones must still be
    # closed once idle_seconds have passed (else they sit in CLOSE_WAIT once the replica closes them at its
    # keep-alive timeout, an fd each, until the replica exits), with traffic and without.
    upstream = Upstream(server.port, idle_seconds=0.5)
    try:
        burst = [threading.Thread(target=upstream.exchange, args=("GET", "/", {}, b"", 5)) for _ in range(6)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        assert open_to(server.port) == 6
        for _ in range(4):  # one request at a time: the newest connection stays in use, the others idle
            assert upstream.exchange("GET", "/", {}, b"", 5)[0] == 200
            time.sleep(0.1)
        assert open_to(server.port) == 1
        time.sleep(0.7)
        upstream.prune()  # what the supervisor does every tick: an idle function's connections go too
        assert open_to(server.port) == 0
    finally:
        upstream.close()


def test_a_closed_upstream_connects_no_more_its_port_may_be_another_process_by_now():
    import socket

    from provider.upstream import Refused

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    try:
        upstream = Upstream(listener.getsockname()[1])
        upstream.close()
        with pytest.raises(Refused, match="released"):
            upstream.exchange("POST", "/", {}, b"x", 5.0)
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody connected
    finally:
        listener.close()
