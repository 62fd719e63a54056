"""The provider runtime without processes (its supervisor is not started): replica counts a deployment asks
for, and what happens to a deleted function's logs."""

from __future__ import annotations

import pytest

from helpers import write_handler
from provider.catalog import Catalog
from provider.config import ProviderConfig
from provider.function import min_replicas
from provider.runtime import Runtime
from provider.types import FunctionDeployment


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(ProviderConfig(run_dir=str(tmp_path / "run"), max_replicas=4, log_retention=30), Catalog(), {})
    yield rt
    rt.logs.close()


def spec(tmp_path, name: str = "fn", **labels: str) -> FunctionDeployment:
    handler = write_handler(str(tmp_path / "handler"), "def handle(request):\n    return b''\n")
    return FunctionDeployment(name, "test/fn:1", labels=labels, annotations={"com.faas-infer.handler": handler})


def test_scale_min_is_clamped_to_max_replicas(runtime, tmp_path):
    big = spec(tmp_path, "big", **{"com.openfaas.scale.min": "1000"})
    assert min_replicas(big, 4) == 4 and min_replicas(spec(tmp_path), 4) == 1
    assert min_replicas(spec(tmp_path, **{"com.openfaas.scale.min": "x"}), 4) == 1
    runtime.deploy(big, update=False)
    fn = runtime.get("big")
    assert fn.desired == 4
    runtime.scale("big", "", 0)
    assert runtime.acquire(fn, 0.0) is None  # scale from zero, without waiting
    assert fn.desired == 4


def test_scale_max_bounds_the_scale_api_and_scale_min(runtime, tmp_path):
    runtime.deploy(spec(tmp_path, "one", **{"com.openfaas.scale.max": "1", "com.openfaas.scale.min": "3"}),
                   update=False)
    fn = runtime.get("one")
    assert fn.desired == 1
    runtime.scale("one", "", 5)
    assert fn.desired == 1  # an FSD coordinator, say, runs alone whatever a client asks


def test_a_forgotten_function_drops_its_logs_after_retention(runtime, tmp_path):
    runtime.deploy(spec(tmp_path), update=False)
    runtime.delete("fn", "")
    fn = runtime.retired[0]
    runtime.forget(fn, now=100.0)
    assert runtime.logs.sweep(129.0) == [] and runtime.logs.has("fn")
    assert runtime.logs.sweep(130.0) == ["fn"] and not runtime.logs.has("fn")


def test_a_function_deployed_again_keeps_its_logs(runtime, tmp_path):
    runtime.deploy(spec(tmp_path), update=False)
    runtime.delete("fn", "")
    old = runtime.retired[0]
    runtime.deploy(spec(tmp_path), update=False)  # same name back while the old replicas drain
    runtime.forget(old, now=0.0)
    assert runtime.logs.sweep(1000.0) == [] and runtime.logs.has("fn")
