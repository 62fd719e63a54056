"""The provider's pure parts: wire types, config, auth, catalog, CPU allocation, replica settings."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone

import pytest

from faas_infer.stack import load_stack
from provider.api import info_shape
from provider.auth import Credentials, protected, write_secrets
from provider.catalog import Catalog
from provider.config import ConfigError, ProviderConfig
from provider.cores import CoreAllocator, cores_for
from provider.errors import BadRequest
from provider.function import Limits, min_replicas, queue_name, watchdog_settings
from provider.logstore import LogStore
from provider.proxy import split_name
from provider.replica import replica_env
from provider.types import (DeleteFunctionRequest, FunctionDeployment, FunctionStatus, ScaleServiceRequest,
                            gateway_info, go_arch, go_time)

FAAS_CLI_BODY = (b'{"service":"py-echo","image":"registry.example.com/py-echo:0.1.0","envProcess":"python index.py",'
                 b'"envVars":{"LOG_LEVEL":"debug"},"constraints":["node.platform.os == linux"],'
                 b'"labels":{"com.openfaas.scale.min":"1"},"annotations":{"com.example.slo":"200ms"},'
                 b'"limits":{"memory":"256Mi","cpu":"500m"},"requests":{"memory":"128Mi","cpu":"100m"},'
                 b'"futureField":{"kept":true}}')


def test_deployment_round_trip_keeps_order_and_unknown_fields():
    spec = FunctionDeployment.from_json(FAAS_CLI_BODY)
    assert spec.namespace == "" and spec.secrets == ()
    out = spec.to_dict()
    assert list(out) == ["service", "image", "envProcess", "envVars", "constraints", "labels", "annotations",
                         "limits", "requests", "futureField"]
    assert out["futureField"] == {"kept": True}


def test_status_is_omitempty_and_ordered_like_faas_provider():
    spec = FunctionDeployment.from_json(FAAS_CLI_BODY)
    created = datetime(2026, 11, 22, 16, 6, 20, 20864, tzinfo=timezone.utc)
    out = FunctionStatus(spec, 0.0, 1, 0, created).to_dict()
    assert list(out)[:3] == ["name", "image", "envProcess"]
    assert "availableReplicas" not in out and "invocationCount" not in out and out["replicas"] == 1
    assert out["createdAt"] == "2026-11-22T16:06:20.020864Z"
    assert go_time(datetime(2026, 1, 1, tzinfo=timezone.utc)) == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("body", [b"", b"[]", b"{", b'{"image":"x"}', b'{"service":"a"}', b'{"service":"a",'
                                  b'"image":"x","envVars":[]}'])
def test_bad_deployments_are_400(body):
    with pytest.raises(BadRequest):
        FunctionDeployment.from_json(body)


def test_scale_and_delete_bodies():
    assert ScaleServiceRequest.from_json(b'{"serviceName":"a","replicas":3}').replicas == 3
    assert ScaleServiceRequest.from_json(b'{"serviceName":"a"}').replicas == 0
    with pytest.raises(BadRequest):
        ScaleServiceRequest.from_json(b'{"replicas":-1}')
    assert DeleteFunctionRequest.from_json(b'{"functionName":"a","namespace":"openfaas-fn"}').namespace == "openfaas-fn"
    with pytest.raises(BadRequest):
        DeleteFunctionRequest.from_json(b"{}")


def test_config_rules():
    assert not ProviderConfig().auth_enabled
    assert ProviderConfig(bind_address="10.0.0.1", secret_mount_path="/s").auth_enabled
    with pytest.raises(ConfigError, match="secret_mount_path"):
        ProviderConfig(bind_address="10.0.0.1")
    with pytest.raises(ConfigError, match="port=0"):
        ProviderConfig.from_env({"port": "0"})
    assert ProviderConfig.from_env({"cold_start_timeout": "2s", "basic_auth": "off"}).cold_start_timeout == 2.0


def test_credentials_and_protected_routes(tmp_path):
    write_secrets(str(tmp_path), "admin", "s3cr3t-p4ss\n")
    creds = Credentials.read(str(tmp_path))
    assert creds.accepts("Basic " + base64.b64encode(b"admin:s3cr3t-p4ss").decode())
    assert not creds.accepts("Basic " + base64.b64encode(b"admin:wrong").decode())
    assert not creds.accepts("Bearer") and not creds.accepts(None) and not creds.accepts("Basic !!")
    assert protected("/system/functions") and protected("/system/info")
    assert not protected("/system/namespaces") and not protected("/function/x") and not protected("/healthz")


def test_catalog_maps_images_names_and_parents(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text("def handle(r):\n    return r.body\n")
    (tmp_path / "stack.yml").write_text("functions:\n  a: {handler: ./a, image: reg/a:1}\n  b: {handler: ./b}\n")
    catalog = Catalog(load_stack(str(tmp_path / "stack.yml")))
    spec = lambda **kw: FunctionDeployment(**{"service": "x", "image": "other:1", **kw})  # noqa: E731
    assert catalog.resolve(spec(image="reg/a:1")) == str(tmp_path / "a")
    assert catalog.resolve(spec(service="b", image="reg/b:9")) == str(tmp_path / "b")
    assert catalog.resolve(spec(image="reg/b:9")) == str(tmp_path / "b")  # learned from the deploy above
    variant = spec(service="a-b4-c1", image="new:2", labels={"com.faas-infer.parent": "a"})
    assert catalog.resolve(variant) == str(tmp_path / "a")
    with pytest.raises(BadRequest, match="no handler folder is known"):
        catalog.resolve(spec(image="unknown:1"))


def test_cores_spread_and_limits():
    assert cores_for(0.5, 4) == 1 and cores_for(1.5, 4) == 2 and cores_for(8, 4) == 4 and cores_for(None, 4) == 4
    alloc = CoreAllocator([0, 1, 2, 3])
    first, second = alloc.allocate(1), alloc.allocate(2)
    assert first == [0] and second == [1, 2] and alloc.allocate(1) == [3]
    alloc.release(second)
    assert alloc.allocate(2) == [1, 2]


def test_watchdog_settings_follow_spec_and_env_wins():
    spec = FunctionDeployment("v", "img", limits={"cpu": "500m", "memory": "256Mi"},
                              annotations={"com.faas-infer.latency_slo": "100ms"},
                              labels={"com.faas-infer.parent": "resnet", "com.openfaas.scale.min": "2"})
    settings = watchdog_settings(spec, Limits.of(spec), "/h", "redis://127.0.0.1:1/0", 0.5)
    assert settings["function_name"] == "resnet" == queue_name(spec) and min_replicas(spec, 32) == 2
    assert settings["cpu_limit"] == "500m" and settings["memory_limit"] == str(256 * 2**20)
    assert settings["latency_slo"] == "100ms" and settings["batch_backend"] == "redis"
    env = replica_env({"port": "1", "PATH": "/bin", "TMPDIR": "/x"}, {"latency_slo": "1s"}, {"port": "2"})
    assert env["port"] == "2" and env["PATH"] == "/bin" and "TMPDIR" not in env and env["latency_slo"] == "1s"
    with pytest.raises(BadRequest):
        Limits.of(FunctionDeployment("v", "img", limits={"memory": "lots"}))


def test_split_name_and_log_store(tmp_path):
    assert split_name("fn.openfaas-fn", "openfaas-fn") == ("fn", "openfaas-fn")
    assert split_name("fn", "openfaas-fn") == ("fn", "openfaas-fn")
    logs = LogStore("openfaas-fn", str(tmp_path), max_lines=3)
    for i in range(5):
        logs.append("fn", "fn-1", f"line {i}\n")
    assert [m.text for m in logs.read("fn")] == ["line 2", "line 3", "line 4"]
    assert [m.text for m in logs.read("fn", tail=1)] == ["line 4"]
    line = json.loads(next(iter(logs.read("fn", tail=1))).to_json())
    assert list(line) == ["name", "namespace", "instance", "timestamp", "text"]
    logs.close()
    assert (tmp_path / "fn.log").read_text().count("\n") == 5


@pytest.mark.parametrize("field, value, named", [
    ("readOnlyRootFilesystem", "false", 'readOnlyRootFilesystem must be true or false, got string "false"'),
    ("envVars", {"A": {"nested": 1}}, "envVars.A must be a string, got an object"),
    ("envVars", {"A": 1}, "envVars.A must be a string, got number 1"),
    ("constraints", [{"node": "x"}], "constraints[0] must be a string, got an object"),
    ("labels", {"com.openfaas.scale.min": 2}, "labels.com.openfaas.scale.min must be a string"),
    ("limits", {"memory": 128}, "limits.memory must be a string"),
    ("secrets", "one", "secrets must be a list of strings, got string"),
    ("namespace", False, "namespace must be a string, got bool false"),
    ("envProcess", ["python"], "envProcess must be a string, got an array"),
])
def test_deployment_fields_are_typed_as_gos_decoder_types_them(field, value, named):
    """What Go's decoder refuses with 400 is refused here too, naming the field (no silent str())."""
    body = json.dumps({"service": "a", "image": "x", field: value}).encode()
    with pytest.raises(BadRequest, match=re.escape(named)):
        FunctionDeployment.from_json(body)


def test_deployment_nulls_decode_as_go_zero_values():
    spec = FunctionDeployment.from_json(b'{"service":"a","image":"x","namespace":null,"envVars":{"A":null},'
                                        b'"constraints":null,"readOnlyRootFilesystem":null}')
    assert spec.namespace == "" and dict(spec.envVars) == {"A": ""} and spec.constraints == ()
    assert FunctionDeployment.from_json(b'{"service":"a","image":"x","readOnlyRootFilesystem":true}'
                                        ).readOnlyRootFilesystem is True


def test_basic_scheme_is_case_insensitive(tmp_path):
    write_secrets(str(tmp_path), "admin", "pw")
    creds = Credentials.read(str(tmp_path))
    token = base64.b64encode(b"admin:pw").decode()
    assert all(creds.accepts(f"{scheme} {token}") for scheme in ("Basic", "basic", "BASIC", "bAsIc"))
    assert not creds.accepts(f"Bearer {token}") and not creds.accepts(f"Basicx {token}")


@pytest.mark.parametrize("setting, forwarded_for, shape", [
    ("auto", "", "gateway"),  # faas-cli directly
    ("auto", "127.0.0.1:45102", "provider"),  # the OpenFaaS gateway (Go RemoteAddr)
    ("auto", "[::1]:45102", "provider"),
    ("auto", "203.0.113.7", "gateway"),  # nginx, Caddy, Traefik: bare addresses
    ("auto", "203.0.113.7, 10.0.0.2", "gateway"),
    ("auto", "2001:db8::1", "gateway"),
    ("gateway", "127.0.0.1:45102", "gateway"),
    ("provider", "", "provider"),
])
def test_info_shape(setting, forwarded_for, shape):
    assert info_shape(setting, forwarded_for) == shape


def test_gateway_info_reports_the_arch_as_go_names_it():
    # The real gateway answers runtime.GOARCH ("arch":"amd64" in client-to-gateway/info.json).
    assert [go_arch(m) for m in ("x86_64", "aarch64", "armv7l", "i686", "ppc64le", "loongarch64", "armv5tel")] == \
        ["amd64", "arm64", "arm", "386", "ppc64le", "loong64", "arm"]
    assert gateway_info("1", "sha", "x86_64")["arch"] == "amd64"
