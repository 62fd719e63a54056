"""Expanding com.faas-infer.partitioned into a coordinator and its workers."""

import re
from dataclasses import replace

import pytest

from faas_infer.stack import Stack, StackError, StackFunction
from fsd.stack import expand_partitioned

REDIS = "redis://127.0.0.1:7000/0"


def stack_with(annotation, env=None):
    fn = StackFunction(name="sparse", handler="./functions/fsd-coordinator", image="fi/sparse:1",
                       handler_path="/repo/functions/fsd-coordinator", environment=env or {},
                       annotations={"com.faas-infer.partitioned": annotation}, labels={"com.openfaas.scale.min": "1"})
    other = StackFunction(name="mlp", handler="./functions/mlp", handler_path="/repo/functions/mlp")
    return Stack("http://127.0.0.1:8080", {"sparse": fn, "mlp": other})


def test_workers_are_added_with_rank_and_shared_settings():
    out = expand_partitioned(stack_with("workers=3,channel=redis,partitioner=random",
                                        {"FSD_MODEL": "neurons=64,layers=2,seed=0"}),
                             "http://127.0.0.1:8080", "redis://127.0.0.1:7000/0")
    assert list(out.functions) == ["sparse", "sparse-worker-0", "sparse-worker-1", "sparse-worker-2", "mlp"]
    coordinator = out.functions["sparse"]
    assert coordinator.environment["FSD_WORKERS"] == "3" and coordinator.environment["FSD_PARTITIONER"] == "random"
    assert coordinator.environment["FSD_REDIS_URL"] == "redis://127.0.0.1:7000/0"
    assert coordinator.environment["FSD_WORKER_FUNCTION"] == "sparse-worker"
    worker = out.functions["sparse-worker-2"]
    assert worker.environment["FSD_RANK"] == "2" and worker.environment["FSD_MODEL"] == "neurons=64,layers=2,seed=0"
    assert worker.handler_path == "/repo/functions/fsd-worker"
    assert worker.annotations["com.faas-infer.handler"] == "/repo/functions/fsd-worker"
    assert "com.openfaas.scale.min" not in worker.labels


def test_stack_settings_win_over_defaults():
    out = expand_partitioned(stack_with("workers=2", {"FSD_REDIS_URL": "redis://127.0.0.1:1/0"}),
                             "http://gw", "redis://127.0.0.1:7000/0")
    assert out.functions["sparse-worker-1"].environment["FSD_REDIS_URL"] == "redis://127.0.0.1:1/0"


@pytest.mark.parametrize("annotation, message", [
    ("channel=redis", "needs workers=N"), ("workers=0", "needs workers=N"), ("workers=2,colour=blue", "part 'colour=blue'")])
def test_bad_annotations_name_the_problem(annotation, message):
    with pytest.raises(StackError, match=message):
        expand_partitioned(stack_with(annotation), "http://gw")


def test_the_coordinator_is_pinned_to_one_replica():
    out = expand_partitioned(stack_with("workers=2"), "http://gw", REDIS)
    assert out.functions["sparse"].labels == {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}
    assert "com.openfaas.scale.max" not in out.functions["sparse-worker-0"].labels
    fn = stack_with("workers=2").functions["sparse"]
    many = Stack("http://gw", {"sparse": replace(fn, labels={"com.openfaas.scale.min": "2"})})
    with pytest.raises(StackError, match="com.openfaas.scale.min='2': a partitioned model's coordinator runs as one"):
        expand_partitioned(many, "http://gw")


def test_every_rank_may_run_as_long_as_fsd_timeout_allows():
    # FSD_TIMEOUT=60: the workers' watchdogs (which the stack cannot configure) answered 504 at their default
    # 30 s exec_timeout, so every job longer than 30 s failed; the coordinator's too when left unset.
    out = expand_partitioned(stack_with("workers=2", {"FSD_TIMEOUT": "60"}), "http://gw", REDIS)
    for name in ("sparse-worker-0", "sparse-worker-1"):
        env = out.functions[name].environment
        assert env["exec_timeout"] == env["write_timeout"] == "63s"  # FSD_TIMEOUT + HTTP_GRACE: the X-Timeout sent
    coordinator = out.functions["sparse"].environment
    assert coordinator["exec_timeout"] == coordinator["write_timeout"] == "66s"
    short = expand_partitioned(stack_with("workers=2", {"FSD_TIMEOUT": "5"}), "http://gw", REDIS).functions
    assert short["sparse-worker-0"].environment["exec_timeout"] == "8s"
    assert "exec_timeout" not in short["sparse"].environment  # the watchdog's default (30 s) is long enough
    kept = expand_partitioned(stack_with("workers=2", {"FSD_TIMEOUT": "60", "exec_timeout": "2m"}), "http://gw", REDIS)
    assert kept.functions["sparse"].environment["exec_timeout"] == "2m"
    assert kept.functions["sparse"].environment["write_timeout"] == "66s"


@pytest.mark.parametrize("timeout", ["1000000", "86401", "60s", "inf", "0"])
def test_an_fsd_timeout_the_handlers_refuse_is_refused_naming_fsd_timeout(timeout):
    # FSD_TIMEOUT=1e6 gave every rank write_timeout '1e+06s', which the watchdog cannot read: the deploy was
    # refused naming write_timeout, a key the stack never set, instead of naming FSD_TIMEOUT.
    with pytest.raises(StackError, match="function sparse: FSD_TIMEOUT=.*must be"):
        expand_partitioned(stack_with("workers=2", {"FSD_TIMEOUT": timeout}), "http://gw", REDIS)
    most = expand_partitioned(stack_with("workers=2", {"FSD_TIMEOUT": "86400"}), "http://gw", REDIS).functions
    assert most["sparse-worker-0"].environment["write_timeout"] == "86403s"


@pytest.mark.parametrize("annotation, env, message", [
    # faas-infer up starts no object store: every rank failed to start, up said only "0/1 ready", and the
    # function answered 503 "exited with code 3" until its logs were read.
    ("workers=2,channel=s3", {}, "function sparse: FSD_S3_ENDPOINT='': must be set when FSD_CHANNEL=s3"),
    ("workers=2", {}, "function sparse: FSD_REDIS_URL='': must be set when FSD_CHANNEL=redis; no Redis is "
                      "deployed with the stack (up --no-redis): give the function FSD_REDIS_URL, or leave it out"),
    ("workers=2,channel=sqs", {}, "FSD_CHANNEL='sqs': must be one of redis, s3"),
    ("workers=2,partitioner=metis", {}, "FSD_PARTITIONER='metis': must be one of connectivity, random"),
    ("workers=100", {"FSD_MODEL": "neurons=64,layers=2"}, "FSD_WORKERS=100: must be <= neurons per layer"),
    ("workers=2", {"FSD_MODEL": "neurons=x"}, "FSD_MODEL='neurons=x'"),
])
def test_settings_the_handlers_would_refuse_stop_the_expansion(annotation, env, message):
    with pytest.raises(StackError, match=re.escape(message)):
        expand_partitioned(stack_with(annotation, env), "http://gw")


def test_an_s3_channel_with_its_endpoint_expands():
    env = {"FSD_S3_ENDPOINT": "http://127.0.0.1:9000"}
    out = expand_partitioned(stack_with("workers=2,channel=s3", env), "http://gw", "redis://127.0.0.1:7000/0")
    worker = out.functions["sparse-worker-1"].environment
    assert worker["FSD_S3_ENDPOINT"] == "http://127.0.0.1:9000" and "FSD_REDIS_URL" not in worker
