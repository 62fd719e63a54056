"""``/async-function`` against a real provider: 202 at once with X-Call-Id, the call run in the background
through the same path as ``/function``, its answer POSTed to X-Callback-Url as the OpenFaaS queue-worker
posts it, a bounded queue (429 beyond it), and the gateway's metrics."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import uuid

import pytest
import requests

from provider_fixtures import INSPECT, ProviderProcess
from helpers import free_port, wait_until, write_handler


class CallbackServer:
    """A real HTTP server on a free loopback port that keeps every POST it receives."""

    def __init__(self) -> None:
        received: queue.Queue = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.put((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 30) -> tuple[str, dict[str, str], bytes]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback():
    server = CallbackServer()
    yield server
    server.close()


@pytest.fixture
def provider(tmp_path):
    proc = ProviderProcess(str(tmp_path), {"async_workers": "1", "max_async_queue": "1"}).start()
    proc.deploy("fn", write_handler(str(tmp_path / "inspect"), INSPECT))
    proc.wait_ready("fn", 1)
    yield proc
    assert proc.stop() == 0


def test_async_call_is_accepted_then_called_back(provider, callback):
    answer = requests.post(f"{provider.url}/async-function/fn.openfaas-fn/sub?x=1", data=b"hello",
                           headers={"X-Callback-Url": callback.url + "/done", "X-Test": "1"}, timeout=10)
    assert answer.status_code == 202 and answer.content == b""
    call_id = answer.headers["X-Call-Id"]
    assert uuid.UUID(call_id).version == 4 and answer.headers["X-Start-Time"].isdigit()
    path, headers, body = callback.next()
    assert path == "/done"
    assert headers["X-Call-Id"] == call_id and headers["X-Function-Status"] == "200"
    assert headers["X-Function-Name"] == "fn" and float(headers["X-Duration-Seconds"]) > 0
    assert headers["Content-Type"] == "application/json"  # the function's own headers come along
    seen = json.loads(body)
    assert seen["body"] == "hello" and seen["path"] == "/sub" and seen["query"] == "x=1"
    assert seen["headers"]["X-Call-Id"] == call_id and seen["headers"]["X-Test"] == "1"
    metrics = requests.get(provider.url + "/metrics", timeout=5).text
    assert 'gateway_function_invocation_total{code="202",function_name="fn.openfaas-fn"} 1' in metrics
    assert 'gateway_function_invocation_total{code="200",function_name="fn.openfaas-fn"} 1' in metrics
    assert provider.status("fn")["invocationCount"] == 1


def test_async_call_keeps_the_callers_call_id_and_runs_without_callback(provider, callback):
    answer = requests.post(f"{provider.url}/async-function/fn", data=b"no callback",
                           headers={"X-Call-Id": "abc-123"}, timeout=10)
    assert answer.status_code == 202 and answer.headers["X-Call-Id"] == "abc-123"
    # one worker and a queue of one: on a loaded host the next call could find the first still queued (429)
    wait_until(lambda: provider.status("fn")["invocationCount"] == 1, 30, what="the first call run")
    answer = requests.post(f"{provider.url}/async-function/fn", data=b"x",
                           headers={"X-Callback-Url": callback.url}, timeout=10)
    assert answer.status_code == 202
    callback.next()  # both ran: the worker takes calls in order
    assert provider.status("fn")["invocationCount"] == 2


def test_async_refusals(provider, callback):
    bad = requests.post(f"{provider.url}/async-function/fn", data=b"x",
                        headers={"X-Callback-Url": "file:///etc/passwd"}, timeout=10)
    assert bad.status_code == 400 and "http:// or https://" in bad.text
    missing = requests.post(f"{provider.url}/async-function/nope", data=b"x", timeout=10)
    assert missing.status_code == 404 and "nope" in missing.text
    # One worker busy for 3 s and a queue of 1: of four quick calls at most two are taken.
    codes = [requests.post(f"{provider.url}/async-function/fn", data=b"sleep 3", timeout=10)
             for _ in range(4)]
    assert [r.status_code for r in codes].count(202) <= 2
    full = [r for r in codes if r.status_code == 429]
    assert full and "max_async_queue=1" in full[0].text
    # A callback that cannot be reached is logged; later calls are still served.
    dead = f"http://127.0.0.1:{free_port()}/gone"
    for url in (dead, callback.url):
        def accepted():
            r = requests.post(f"{provider.url}/async-function/fn", data=b"x", headers={"X-Callback-Url": url},
                              timeout=10)
            return r.status_code == 202
        wait_until(accepted, 30, interval=0.5, what="room in the async queue")
    _, headers, _ = callback.next()
    assert headers["X-Function-Status"] == "200"


def test_calls_to_another_namespace_are_counted_under_it(provider):
    # The gateway labels a call with the namespace it named: not the default namespace's deployed function.
    assert requests.post(f"{provider.url}/function/fn.staging", data=b"x", timeout=10).status_code == 503
    assert requests.post(f"{provider.url}/async-function/fn.staging", data=b"x", timeout=10).status_code == 404
    metrics = requests.get(provider.url + "/metrics", timeout=5).text
    assert 'gateway_function_invocation_total{code="503",function_name="fn.staging"} 1' in metrics
    assert 'gateway_function_invocation_total{code="404",function_name="fn.staging"} 1' in metrics
    assert 'gateway_function_invocation_started{function_name="fn.staging"} 2' in metrics
    assert not [line for line in metrics.splitlines()
                if line.startswith("gateway_function") and 'function_name="fn.openfaas-fn"' in line]
    assert provider.status("fn").get("invocationCount", 0) == 0
