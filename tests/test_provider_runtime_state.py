"""The provider runtime without processes (its supervisor is not started): replica counts a deployment asks
for, and what happens to a deleted function's logs."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import threading
import time

import pytest

from helpers import write_handler
from provider.catalog import Catalog
from provider.config import ProviderConfig
from provider.errors import BadRequest
from provider.function import min_replicas
from provider.replica import LaunchSpec, Replica, State
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


def test_an_update_lowering_scale_max_lowers_the_replicas(runtime, tmp_path):
    runtime.deploy(spec(tmp_path, "f", **{"com.openfaas.scale.max": "4"}), update=False)
    runtime.scale("f", "", 3)
    runtime.deploy(spec(tmp_path, "f", **{"com.openfaas.scale.max": "1"}), update=True)
    assert runtime.get("f").desired == 1


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


@pytest.mark.parametrize("env_vars, named", [
    ({"max_batch_size": "zero"}, "max_batch_size='zero': must be an integer"),
    ({"max_batch_size": "0"}, "max_batch_size=0: must be >= 1"),
    ({"write_timeout": "soon"}, "write_timeout='soon'"),
    ({"batch_backend": "redis"}, "redis_url=: must be set when batch_backend=redis"),
])
def test_deploy_refuses_envvars_the_watchdog_would_refuse(runtime, tmp_path, env_vars, named):
    """Checked on the environment a replica gets, so a deploy cannot leave a crash-looping function."""
    bad = dataclasses.replace(spec(tmp_path), envVars=env_vars)
    with pytest.raises(BadRequest, match=f"envVars of fn: {re.escape(named)}"):
        runtime.deploy(bad, update=False)
    assert runtime.find("fn") is None
    runtime.deploy(spec(tmp_path), update=False)
    with pytest.raises(BadRequest, match="max_batch_size"):  # an update is refused the same way
        runtime.deploy(dataclasses.replace(spec(tmp_path), envVars={"max_batch_size": "-1"}), update=True)
    assert runtime.find("fn").generation == 1


def test_provider_settings_win_over_envvars_they_replace(runtime, tmp_path):
    """cpu_limit comes from limits.cpu when set, so a junk envVars value there does not matter."""
    ok = dataclasses.replace(spec(tmp_path), envVars={"cpu_limit": "junk", "max_inflight": "4"},
                             limits={"cpu": "1"})
    runtime.deploy(ok, update=False)
    assert runtime.find("fn") is not None


def test_deploy_naming_secrets_is_refused(runtime, tmp_path):
    with pytest.raises(BadRequest, match="secrets are not supported by the local provider: remove secrets"):
        runtime.deploy(dataclasses.replace(spec(tmp_path), secrets=("api-key",)), update=False)


def test_a_drain_begun_while_a_request_picks_the_replica_waits_for_that_request(runtime, tmp_path):
    # A request thread chose the replica (still ready) and had not yet counted itself on it when the supervisor
    # marked it draining and, seeing nothing in flight, sent SIGTERM: the request went to a stopping replica
    # (on a kept connection the replica was closing: one failed request in 4860 during a scale-down).
    runtime.deploy(spec(tmp_path), update=False)
    fn = runtime.get("fn")
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    launch = LaunchSpec("fn", "fn-a", fn.generation, fn.function_dir, str(tmp_path / "a"), {})
    replica = Replica(launch, proc, 1, 2, state=State.READY)
    fn.replicas.append(replica)
    counting, go = threading.Event(), threading.Event()
    count = replica.acquire

    def slow_acquire() -> None:  # the request thread is descheduled between choosing and counting
        counting.set()
        go.wait(5)
        count()
    replica.acquire = slow_acquire
    picked: list = []
    request = threading.Thread(target=lambda: picked.append(runtime.acquire(fn, 1.0)))
    request.start()
    try:
        assert counting.wait(5)
        drain = threading.Thread(target=lambda: (runtime.supervisor._begin_drain(fn, replica),
                                                 runtime.supervisor._drain(fn, time.monotonic())))
        drain.start()
        time.sleep(0.3)
        go.set()
        request.join(5)
        drain.join(5)
        assert picked == [replica] and replica.outstanding == 1
        assert replica.state is State.DRAINING and proc.poll() is None  # not stopped under its request
        replica.release()
        runtime.supervisor._drain(fn, time.monotonic())
        assert replica.state is State.STOPPING and proc.wait(5) == -signal.SIGTERM
    finally:
        go.set()
        proc.kill()
        proc.wait(5)
