"""The recorded faas-cli and gateway requests, replayed as sent against a real provider, get the answers
those clients expect: same status codes, same body shapes and values (volatile values ignored)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import requests

from provider_fixtures import ECHO, FIXTURES, ProviderProcess, body_bytes, fixture, same_shape, send
from helpers import REPO, wait_until, write_handler
from provider.types import go_arch

GATEWAY_STEPS = ("info", "healthz", "deploy-post", "deploy-put", "list", "list-namespace", "get-function",
                 "get-function-namespace", "scale", "scale-clamp", "invoke-json", "invoke-binary",
                 "invoke-namespaced-path-query", "invoke-unknown", "list-after-invoke", "delete",
                 "delete-no-namespace", "delete-missing")


@pytest.fixture
def provider(tmp_path):
    """A provider serving the recording's stack.yml, whose handler folders hold an echo function."""
    shutil.copy(f"{FIXTURES}/stack.yml", tmp_path / "stack.yml")
    for name in ("py-echo", "py-batch"):
        write_handler(str(tmp_path / name), ECHO)
    proc = ProviderProcess(str(tmp_path), {"stack_file": str(tmp_path / "stack.yml")}).start()
    yield proc
    assert proc.stop() == 0


def settle(url: str) -> None:
    """Wait until every function has all its desired replicas ready, and no replica is left draining."""
    def settled():
        listing = requests.get(url + "/system/functions", timeout=5).json()
        return all(s.get("availableReplicas", 0) == s.get("replicas", 0) == len(s["faasInfer"]["instances"])
                   for s in listing)
    wait_until(settled, 60, what="replicas to settle")


def check(url: str, exchange: dict) -> None:
    """Send one recorded request; the answer matches the recorded one."""
    request, expected = exchange["request"], exchange["response"]
    status, headers, body = send(url, request)
    what = f"{request['method']} {request['path']}"
    assert status == expected["status"], f"{what}: {status} {body!r}"
    content_type = expected["headers"].get("Content-Type", "")
    if content_type == "application/json" and expected["body"]:
        assert headers["content-type"] == "application/json"
        same_shape(json.loads(expected["body"]), json.loads(body), what)
    elif request["path"].startswith("/function/"):
        assert body == body_bytes(expected), what
        assert headers.get("content-type") == content_type, what
        assert "x-duration-seconds" in headers or status == 503, what
        check_trace(request, headers, what)
    else:
        assert body == body_bytes(expected), f"{what}: {body!r}"
        if expected["status"] >= 400:
            assert headers["content-type"] == "text/plain; charset=utf-8"
        if expected["status"] == 202:
            assert "content-type" not in headers and headers["content-length"] == "0"


def check_trace(request: dict, headers: dict[str, str], what: str) -> None:
    """X-Call-Id and X-Start-Time are the caller's (the gateway's) when sent, else a fresh uuid4 and now in
    unix nanoseconds, as the gateway sends."""
    sent = {k.lower(): v for k, v in request["headers"].items()}
    call_id = headers.get("x-call-id", "")
    if sent.get("x-call-id"):
        assert call_id == sent["x-call-id"], what
    else:
        assert uuid.UUID(call_id).version == 4, what
    start = headers.get("x-start-time", "")
    if sent.get("x-start-time"):
        assert start == sent["x-start-time"], f"{what}: {start!r}"
    else:
        assert start.isdigit() and abs(int(start) - time.time_ns()) < 120 * 10**9, f"{what}: {start!r}"


def test_client_to_gateway_invocations_get_the_gateways_headers(provider):
    """Every header a client saw from the real gateway on invocations (values that differ per call excepted),
    including on the 503 for an unknown function."""
    url = provider.url
    check(url, fixture("gateway-to-provider/deploy-post.json")[0])
    settle(url)
    ignored = {"date", "server", "connection", "x-served-by"}
    for step in ("invoke-json", "invoke-binary", "invoke-namespaced-path-query", "invoke-unknown"):
        for exchange in fixture(f"client-to-gateway/{step}.json"):
            request, expected = exchange["request"], exchange["response"]
            status, headers, body = send(url, request)
            assert status == expected["status"] and body == body_bytes(expected), step
            missing = {k.lower() for k in expected["headers"]} - ignored - set(headers)
            assert not missing, f"{step}: {sorted(missing)}"  # ours may add some (X-Batch-Size)
            assert len(headers["x-start-time"]) == len(expected["headers"]["X-Start-Time"]), step
            check_trace(request, headers, step)


def test_faas_cli_session(provider):
    """faas-cli 0.17 deploy, list, describe, invoke, update, replace, remove, version, in recorded order."""
    url = provider.url
    deploy = fixture("faas-cli/deploy.json")
    for exchange in deploy:
        check(url, exchange)
    settle(url)
    for name in ("list", "list-verbose", "describe", "invoke-json", "invoke-binary", "invoke-header-query",
                 "deploy-update", "deploy-replace-conflict"):
        for exchange in fixture(f"faas-cli/{name}.json"):
            check(url, exchange)
    for name in ("deploy-replace", "remove", "remove-missing"):
        for exchange in fixture(f"faas-cli/{name}.json"):
            check(url, exchange)
    status, headers, body = send(url, fixture("faas-cli/version.json")[0]["request"])
    info = json.loads(body)
    assert status == 200 and set(info) == {"provider", "version", "arch"}
    assert set(info["provider"]) == {"provider", "orchestration", "version"}
    assert set(info["version"]) >= {"sha", "release"}


def test_info_has_the_gateways_arch(provider):
    """A client asking us directly gets the arch the real gateway reports: Go's name (amd64, not x86_64)."""
    exchange = fixture("client-to-gateway/info.json")[0]
    status, _, body = send(provider.url, exchange["request"])
    assert status == 200
    arch = json.loads(body)["arch"]
    if platform.machine() == "x86_64":  # the recording machine's
        assert arch == json.loads(exchange["response"]["body"])["arch"] == "amd64"
    assert arch == go_arch(platform.machine())


def test_gateway_as_client(provider):
    """What the real CE gateway forwarded to its provider, step by step, including scale from zero."""
    url = provider.url
    for step in GATEWAY_STEPS:
        if step.startswith(("list", "get-function")):
            settle(url)
        for exchange in fixture(f"gateway-to-provider/{step}.json"):
            if step == "info":
                status, _, body = send(url, exchange["request"])
                assert status == 200 and set(json.loads(body)) == {"provider", "orchestration", "version"}
                continue
            check(url, exchange)
    metrics = requests.get(url + "/metrics", timeout=5).text
    assert 'gateway_function_invocation_total{code="200",function_name="py-echo.openfaas-fn"} 3' in metrics
    assert 'gateway_function_invocation_total{code="503",function_name="nope.openfaas-fn"} 1' in metrics
    assert 'gateway_functions_seconds_count{code="200",function_name="py-echo.openfaas-fn"} 3' in metrics
    assert 'gateway_function_invocation_started{function_name="nope.openfaas-fn"} 1' in metrics

    # Run B: scale_from_zero. The function was set to 0 replicas between deploy and the cold invoke.
    check(url, fixture("gateway-to-provider/sfz-deploy.json")[0])
    settle(url)
    assert requests.post(url + "/system/scale-function/py-echo", json={"serviceName": "py-echo", "replicas": 0},
                         timeout=5).status_code == 202
    settle(url)
    cold = fixture("gateway-to-provider/sfz-invoke-cold.json")
    for i, exchange in enumerate(cold):
        if i == 3:  # the gateway polls until availableReplicas > 0
            settle(url)
        check(url, exchange)
    for step in ("sfz-invoke-warm", "sfz-invoke-after-cache", "sfz-invoke-unknown", "sfz-delete"):
        for exchange in fixture(f"gateway-to-provider/{step}.json"):
            check(url, exchange)
    # The gateway's background exporter: namespaces, then the list per namespace.
    for exchange in fixture("gateway-to-provider/background-exporter.json")[-2:]:
        check(url, exchange)


def test_prometheus_query_the_gateway_sends(provider):
    """The gateway's list asks Prometheus for invocations by function; the provider can answer it."""
    url = provider.url
    for exchange in fixture("gateway-to-provider/deploy-post.json")[:1]:
        check(url, exchange)
    settle(url)
    assert requests.post(url + "/function/py-echo", data=b"x", timeout=30).status_code == 200
    query = fixture("gateway-to-prometheus/list.json")[0]["request"]
    status, _, body = send(url, query)
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success" and answer["data"]["resultType"] == "vector"
    assert answer["data"]["result"][0]["metric"] == {"function_name": "py-echo.openfaas-fn"}
    assert answer["data"]["result"][0]["value"][1] == "1"


def test_a_query_other_than_the_gateways_is_refused_and_top_says_so(provider):
    """Any query naming gateway_function_invocation_total was answered with the gateway's sums: `faas-infer
    top --prometheus <the provider>` (its URL taken for Prometheus's) showed no functions and no problem."""
    url = provider.url
    for query in ('{__name__=~"gateway_function_invocation_total|gateway_service_count"}',
                  "gateway_function_invocation_total", "rate(gateway_function_invocation_total[1m])"):
        answer = requests.get(url + "/api/v1/query", params={"query": query}, timeout=10)
        assert answer.status_code == 400 and answer.json()["status"] == "error", (query, answer.text)
    for query in ("sum(gateway_function_invocation_total) by (function_name)",
                  'sum(gateway_function_invocation_total{function_name=~".*.openfaas-fn"}) by (function_name)'):
        assert requests.get(url + "/api/v1/query", params={"query": query}, timeout=10).status_code == 200
    top = subprocess.run([sys.executable, "-m", "faas_infer.cli", "top", "--prometheus", url, "--once",
                          "--interval", "0.2"], env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                         text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    assert f"! prometheus {url}: HTTP 400: this is not Prometheus: only the OpenFaaS gateway's query" in top.stdout


def test_status_lines_carry_the_gateways_reason_phrases(provider):
    import http.client

    host = provider.url.split("//", 1)[1]
    name = "py-echo"
    deployed = provider.deploy(name, f"{provider.tmp}/{name}")
    answers = [(deployed.status_code, deployed.reason)]
    scale = json.dumps({"serviceName": name, "replicas": 1}).encode()
    for method, path, body in (("POST", f"/system/scale-function/{name}", scale),
                               ("GET", "/system/function/nope", None), ("GET", "/nowhere", None)):
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request(method, path, body)
        response = conn.getresponse()
        response.read()
        answers.append((response.status, response.reason))
        conn.close()
    # as Go writes them (faas-cli prints "Deployed. 202 Accepted."), not Werkzeug's "202 ACCEPTED"
    assert answers == [(202, "Accepted"), (202, "Accepted"), (404, "Not Found"), (404, "Not Found")]
