"""What a real provider refuses, over HTTP, the way OpenFaaS' Go code refuses it: deploy bodies with
mistyped fields or envVars the watchdog would refuse (400 naming the field or key), secrets (400 on deploy,
501 on /system/secrets); and the /system/info shape behind a reverse proxy."""

from __future__ import annotations

import json

import pytest
import requests

from provider_fixtures import ECHO, ProviderProcess, fixture, send
from helpers import write_handler


@pytest.fixture
def provider(tmp_path):
    proc = ProviderProcess(str(tmp_path)).start()
    proc.handler = write_handler(str(tmp_path / "echo"), ECHO)
    yield proc
    assert proc.stop() == 0


@pytest.mark.parametrize("spec, named", [
    ({"readOnlyRootFilesystem": "false"}, "readOnlyRootFilesystem must be true or false"),
    ({"envVars": {"A": {"nested": True}}}, "envVars.A must be a string"),
    ({"constraints": [{"node": "x"}]}, "constraints[0] must be a string"),
    ({"envVars": {"max_batch_size": "zero"}}, "envVars of fn: max_batch_size='zero': must be an integer"),
    ({"envVars": {"exec_timeout": "-"}}, "envVars of fn: exec_timeout='-'"),
    ({"envVars": {"LOG_LEVEL": "loud"}}, "envVars of fn: LOG_LEVEL='loud': not a logging level"),
    # What exec refuses: accepted, each start of a replica failed (tracebacks four times a second) forever.
    ({"envVars": {"BIG": "x" * 200_000}}, "envVars of fn: BIG: 200005 bytes, over the 131072 one variable may have"),
    ({"envVars": {f"V{i}": "x" * 100_000 for i in range(40)}}, "envVars of fn: the environment is "),
    ({"envVars": {"A": "a\u0000b"}}, "envVars of fn: A: the value holds a NUL byte"),
    ({"envVars": {"A=B": "c"}}, "envVars of fn: 'A=B': not an environment variable name"),
    # A lone surrogate ("\ud800" in the JSON) cannot become bytes: it was a 500 with a traceback.
    ({"envVars": {"A": "\ud800"}}, "envVars of fn: 'A': not encodable as an environment variable"),
    ({"envVars": {"B\ud800": "c"}}, "envVars of fn: 'B\\ud800': not encodable as an environment variable"),
    ({"annotations": {"com.faas-infer.latency_slo": "fast"}},
     "annotation com.faas-infer.latency_slo of fn: latency_slo='fast'"),
    ({"secrets": ["api-key"]}, "secrets are not supported by the local provider"),
    # a quantity beyond a float (OverflowError) was a 500
    ({"limits": {"memory": "9" * 400}}, "limits of fn: '" + "9" * 400 + "': a memory quantity must be finite"),
])
def test_bad_deploys_are_400_and_leave_nothing(provider, spec, named):
    answer = provider.deploy("fn", provider.handler, **spec)
    assert answer.status_code == 400 and named in answer.text, answer.text
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert requests.get(provider.url + "/system/functions", timeout=5).json() == []
    # An update is refused the same way and leaves the running spec as it was.
    assert provider.deploy("fn", provider.handler, envVars={"GREETING": "hi"}).status_code == 202
    answer = provider.deploy("fn", provider.handler, method="PUT", **spec)
    assert answer.status_code == 400 and named in answer.text, answer.text
    assert provider.status("fn")["envVars"] == {"GREETING": "hi"}


def test_recorded_faas_cli_deploys_are_still_accepted(provider):
    """The faas-cli bodies carry watchdog knobs (exec_timeout, max_inflight, ...) and readOnlyRootFilesystem."""
    for exchange in fixture("faas-cli/deploy.json"):
        request = dict(exchange["request"])
        body = json.loads(request["body"])
        body["annotations"]["com.faas-infer.handler"] = provider.handler
        request["body"] = json.dumps(body)
        status, _, answer = send(provider.url, request)
        assert status == exchange["response"]["status"], answer


def test_secrets_api_is_501(provider):
    for method in ("GET", "POST", "PUT", "DELETE"):
        answer = requests.request(method, provider.url + "/system/secrets", json={"name": "a", "value": "b"},
                                  timeout=5)
        assert answer.status_code == 501, method
        assert answer.text.startswith("secrets are not supported by the local provider: ")


def test_info_behind_a_reverse_proxy_keeps_the_gateway_shape(provider):
    """nginx in front adds X-Forwarded-Host/-For (a bare address): faas-cli must still get what it parses;
    the OpenFaaS gateway's request (X-Forwarded-For with the client's port) gets ProviderInfo."""
    proxied = requests.get(provider.url + "/system/info", timeout=5, headers={
        "User-Agent": "faas-cli/0.17.0", "X-Forwarded-Host": "faas.example.com", "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https", "X-Real-Ip": "203.0.113.7"})
    assert set(proxied.json()) == {"provider", "version", "arch"}
    status, _, body = send(provider.url, fixture("gateway-to-provider/info.json")[0]["request"])
    assert status == 200 and set(json.loads(body)) == {"provider", "orchestration", "version"}
