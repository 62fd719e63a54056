"""Basic auth: the recorded faas-cli auth runs replayed against a provider with auth on, and the same
clients (empty ``Bearer`` included) accepted with auth off."""

from __future__ import annotations

import base64

import pytest
import requests

from provider_fixtures import ECHO, ProviderProcess, fixture, send
from helpers import write_handler

USER, PASSWORD = "admin", "s3cr3t-p4ss"


@pytest.fixture
def secured(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text(USER)
    (secrets / "basic-auth-password").write_text(PASSWORD + "\n")
    handler = write_handler(str(tmp_path / "py-echo"), ECHO)
    proc = ProviderProcess(str(tmp_path), {"basic_auth": "true", "secret_mount_path": str(secrets)}).start()
    response = proc.deploy("py-echo", handler, auth=(USER, PASSWORD), labels={"com.openfaas.scale.min": "1"})
    assert response.status_code == 202
    yield proc
    assert proc.stop() == 0


def test_recorded_auth_runs(secured):
    url = secured.url
    for name in ("auth-list-no-login", "auth-login-wrong"):
        request, expected = fixture(f"faas-cli/{name}.json")[0].values()
        status, headers, body = send(url, request)
        assert (status, body) == (401, b"invalid credentials\n") == (expected["status"], expected["body"].encode())
        assert headers["www-authenticate"] == 'Basic realm="Restricted"'
    for name in ("auth-login", "auth-list"):
        status, headers, body = send(url, fixture(f"faas-cli/{name}.json")[0]["request"])
        assert status == 200 and headers["content-type"] == "application/json"
    # Invocations never carry credentials and are never refused for it.
    request, expected = fixture("faas-cli/auth-invoke.json")[0].values()
    status, _, body = send(url, request)
    assert (status, body) == (200, expected["body"].encode())


def test_open_and_protected_routes(secured):
    url = secured.url
    assert requests.get(url + "/healthz", timeout=5).status_code == 200
    assert requests.get(url + "/system/namespaces", timeout=5).json() == ["openfaas-fn"]
    assert requests.get(url + "/metrics", timeout=5).status_code == 200
    for method, path in (("GET", "/system/info"), ("GET", "/system/function/py-echo"), ("GET", "/system/logs"),
                         ("POST", "/system/scale-function/py-echo"), ("DELETE", "/system/functions")):
        assert requests.request(method, url + path, timeout=5).status_code == 401, path
    ok = requests.get(url + "/system/function/py-echo", auth=(USER, PASSWORD), timeout=5)
    assert ok.status_code == 200 and ok.json()["name"] == "py-echo"


def test_auth_off_ignores_empty_bearer(tmp_path):
    handler = write_handler(str(tmp_path / "py-echo"), ECHO)
    proc = ProviderProcess(str(tmp_path)).start()
    try:
        proc.deploy("py-echo", handler)
        status, _, _ = send(proc.url, fixture("faas-cli/auth-list-no-login.json")[0]["request"])
        assert status == 200
    finally:
        assert proc.stop() == 0


def test_basic_scheme_is_matched_case_insensitively(secured):
    """Go's Request.BasicAuth compares the scheme case-insensitively: "basic" works as "Basic" does."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for scheme in ("basic", "BASIC", "Basic"):
        answer = requests.get(secured.url + "/system/functions", headers={"Authorization": f"{scheme} {token}"},
                              timeout=5)
        assert answer.status_code == 200, scheme
    wrong = base64.b64encode(f"{USER}:nope".encode()).decode()
    assert requests.get(secured.url + "/system/functions", headers={"Authorization": f"basic {wrong}"},
                        timeout=5).status_code == 401
