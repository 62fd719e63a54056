"""``faas-infer top`` against a real provider with basic auth on: only the functions it lists are shown,
not names the gateway metrics hold for calls to unknown functions or for deleted ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from provider_fixtures import ECHO, ProviderProcess
from helpers import REPO, wait_until, write_handler

AUTH = ("admin", "t0p-s3cret")


@pytest.fixture
def provider(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text(AUTH[0])
    (secrets / "basic-auth-password").write_text(AUTH[1])
    proc = ProviderProcess(str(tmp_path), {"basic_auth": "true", "secret_mount_path": str(secrets)}).start()
    proc.secrets = str(secrets)
    yield proc
    assert proc.stop() == 0


def top_once(provider, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "faas_infer.cli", "top", "--once", "--interval", "0.2",
                           "--gateway", provider.url, "--autoscaler", "", *flags], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_top_lists_deployed_functions_only(provider, tmp_path):
    """It listed `nope` (a call to /function/nope) and `gone` (deleted) beside `kept`."""
    echo = write_handler(str(tmp_path / "echo"), ECHO)
    for name in ("kept", "gone"):
        assert provider.deploy(name, echo, auth=AUTH).status_code == 202
    for name in ("kept", "gone"):
        wait_until(lambda: requests.get(f"{provider.url}/system/function/{name}", auth=AUTH, timeout=5)
                   .json().get("availableReplicas") == 1, 60, what=f"{name} ready")
    for name in ("kept", "gone", "nope"):
        requests.post(f"{provider.url}/function/{name}", data=b"x", timeout=30)
    assert requests.delete(provider.url + "/system/functions", json={"functionName": "gone"}, auth=AUTH,
                           timeout=10).status_code == 202
    metrics = requests.get(provider.url + "/metrics", timeout=10).text
    assert 'function_name="nope.openfaas-fn"' in metrics and 'function_name="gone.openfaas-fn"' in metrics

    shown = [line.split()[0] for line in top_once(provider, "--secret-mount-path", provider.secrets).splitlines()[2:]
             if line and not line.startswith(("!", "autoscaler"))]
    assert shown == ["kept"]
    # Without the credentials the list cannot be read: every name is shown, and the frame says why.
    text = top_once(provider)
    assert "nope" in text and "! functions " + provider.url + "/system/functions: HTTPError; pass " \
        "--secret-mount-path" in text
