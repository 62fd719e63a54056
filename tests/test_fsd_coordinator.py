"""Coordinator and workers in one process (threads) over the real channels: equal outputs, bounded failure."""

from __future__ import annotations

import json
import time
from concurrent.futures import wait
from dataclasses import replace

import numpy as np
import pytest

from fsd.channel import Message
from fsd.config import FsdConfig
from fsd.coordinator import Coordinator, job_id
from fsd.deployment import build_coordinator
from fsd.errors import ChannelError, ChannelTimeout, FsdError, JobAborted, WorkerFailed
from fsd.invoke import LocalInvoker
from fsd.model import ModelSpec, forward, generate, inputs
from fsd.partition import COORDINATOR, Partition, partition, traffic
from fsd.redis_channel import RedisQueueChannel
from fsd.s3_channel import S3Channel
from fsd.s3_client import S3Client
from fsd.s3_server import S3Server
from fsd.schedule import coordinator_plan, worker_program
from fsd.worker import JobSpec, run_worker

SPEC = ModelSpec(neurons=192, layers=5, seed=4, weight_jitter=0.5)
MODEL = generate(SPEC)
X = inputs(SPEC, 6, seed=1)
EXPECTED = forward(MODEL, X)


def _coordinator(channel, workers, method="connectivity", timeout=5.0, programs=None):
    parts = partition(MODEL, workers, method)
    programs = programs or {r: worker_program(MODEL, parts, r) for r in range(workers)}
    return Coordinator(coordinator_plan(MODEL, parts), channel, LocalInvoker(programs, channel), timeout), parts


@pytest.fixture
def s3_channel():
    server = S3Server().start()
    client = S3Client(server.url)
    client.create_bucket("fsd")
    yield S3Channel(client, "fsd")
    server.stop()


@pytest.mark.parametrize("method", ["connectivity", "random"])
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_redis_outputs_equal_the_unpartitioned_model(redis_server, redis_client, workers, method):
    channel = RedisQueueChannel.from_url(redis_server.url, max_message_bytes=1024)  # forces split frames
    coordinator, parts = _coordinator(channel, workers, method)
    result = coordinator.run(X)
    np.testing.assert_allclose(result.outputs, EXPECTED, rtol=1e-5, atol=1e-6)
    assert result.exchange.bytes == traffic(MODEL, parts).exchange * 4 * len(X)
    assert result.cost.total_usd > 0 and len(result.workers) == workers
    assert not redis_client.keys("fsd:*")


@pytest.mark.parametrize("workers", [1, 4])
def test_s3_outputs_equal_the_unpartitioned_model(s3_channel, workers):
    coordinator, parts = _coordinator(s3_channel, workers)
    result = coordinator.run(X)
    np.testing.assert_allclose(result.outputs, EXPECTED, rtol=1e-5, atol=1e-6)
    assert result.exchange.bytes == traffic(MODEL, parts).exchange * 4 * len(X)
    assert result.usage.requests["put"] == result.usage.messages
    assert s3_channel.client.list("fsd")[0] == []


def test_a_failed_clean_up_does_not_fail_a_job_whose_outputs_are_in(redis_server, redis_client):
    # A Redis user that may not DEL: the purge after a successful job fails (as it does when Redis goes
    # away just then, or S3 answers the LIST with 503 SlowDown). The answer is in hand, and whatever is
    # left expires (Redis) or is swept (S3).
    redis_client.acl_setuser("fsd-nodel", enabled=True, nopass=True, keys=["*"], commands=["+@all", "-del"])
    try:
        url = redis_server.url.replace("redis://", "redis://fsd-nodel:any@")
        coordinator, _ = _coordinator(RedisQueueChannel.from_url(url), 2)
        result = coordinator.run(X)
        np.testing.assert_allclose(result.outputs, EXPECTED, rtol=1e-5, atol=1e-6)
        assert all(0 < redis_client.ttl(k) for k in redis_client.keys("fsd:*"))
    finally:
        redis_client.acl_deluser("fsd-nodel")


class _Dropping:
    """A real channel whose endpoints lose the first message from ``rank`` at ``layer``."""

    def __init__(self, inner, rank, layer):
        self.inner, self.rank, self.layer, self.kind = inner, rank, layer, inner.kind

    def endpoint(self, job, rank, deadline=None):
        endpoint = self.inner.endpoint(job, rank, deadline)
        if rank == self.rank:
            send = endpoint.send
            endpoint.send = lambda ms: send([m for m in ms if m.layer != self.layer])
        return endpoint

    def purge(self, job, ranks):
        return self.inner.purge(job, ranks)

    def abort(self, job, ranks, reason):
        self.inner.abort(job, ranks, reason)


class _Truncating(_Dropping):
    """A real channel whose endpoints send ``rank``'s blocks for ``layer`` two bytes short (a foreign or
    another version's object or frame under the block's name)."""

    def endpoint(self, job, rank, deadline=None):
        endpoint = self.inner.endpoint(job, rank, deadline)
        if rank == self.rank:
            send = endpoint.send
            endpoint.send = lambda ms: send([replace(m, data=m.data[:-2]) if m.layer == self.layer else m
                                             for m in ms])
        return endpoint


@pytest.mark.parametrize("kind", ["redis", "s3"])
def test_a_malformed_block_is_a_channel_error_naming_its_sender(request, kind):
    """numpy refused a block of the wrong size with a ValueError naming nothing; in the coordinator it was no
    FsdError, so the handler raised it from handle_batch and the watchdog's bisection ran the batch again."""
    if kind == "redis":
        request.getfixturevalue("redis_client")
        inner = RedisQueueChannel.from_url(request.getfixturevalue("redis_server").url)
    else:
        inner = request.getfixturevalue("s3_channel")
    coordinator, _ = _coordinator(_Truncating(inner, rank=1, layer=SPEC.layers + 1), 2, timeout=3.0)
    with pytest.raises(ChannelError, match=r"^coordinator: job \S+ got \d+ bytes of layer-6 activations from "
                                           r"rank 1 where \d+ x 6 float32 values \(\d+ bytes\) were expected"):
        coordinator.run(X)
    coordinator, _ = _coordinator(_Truncating(inner, rank=0, layer=3), 2, timeout=3.0)
    with pytest.raises(WorkerFailed, match=r"^rank 1: job \S+ got \d+ bytes of layer-3 activations from rank 0 "):
        coordinator.run(X)


def test_lost_message_gives_a_clear_error_within_the_timeout(redis_server, redis_client):
    channel = _Dropping(RedisQueueChannel.from_url(redis_server.url), rank=0, layer=3)
    coordinator, _ = _coordinator(channel, 3, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match="^rank [12]: no layer-3 activations from rank 0"):
        coordinator.run(X)
    assert time.monotonic() - started < 1.5 + 1.0


def test_failing_worker_fails_the_job_at_once(redis_server, redis_client):
    parts = partition(MODEL, 2, "connectivity")
    programs = {0: worker_program(MODEL, parts, 0), 1: worker_program(MODEL, parts, 0)}  # rank 1 misconfigured
    coordinator, _ = _coordinator(RedisQueueChannel.from_url(redis_server.url), 2, timeout=5.0, programs=programs)
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match="rank 1: job .* invoked rank 1 on the worker of rank 0"):
        coordinator.run(X)
    assert time.monotonic() - started < 2.0


def test_redis_receive_names_what_is_missing(redis_server, redis_client):
    channel = RedisQueueChannel.from_url(redis_server.url)
    channel.endpoint("j", 0).send([Message(1, 2, 0, b"\0" * 8)])
    with pytest.raises(ChannelTimeout, match="rank 1: no layer-2 activations from rank 3"):
        channel.endpoint("j", 1).receive(2, [0, 3], time.monotonic() + 0.2)


def test_job_spec_round_trip_and_rules():
    spec = JobSpec("abc", 2, 4, 3.0, 1.7e9)
    assert JobSpec.from_json(json.loads(spec.to_json())) == spec
    with pytest.raises(FsdError, match="bad job spec"):
        JobSpec.from_json({"job": "x"})
    with pytest.raises(FsdError, match="batch=0 must be >= 1"):
        JobSpec.from_json({"job": "x", "rank": 0, "batch": 0, "timeout": 1, "expires": 1.7e9})


@pytest.mark.parametrize("body", ["null", "[1]", "[]", '"job"', "3"])
def test_job_spec_must_be_an_object(body):
    with pytest.raises(FsdError, match="bad job spec: expected a JSON object"):
        JobSpec.from_json(json.loads(body))


@pytest.mark.parametrize("field, value", [("timeout", "NaN"), ("timeout", "Infinity"), ("timeout", "0"),
                                          ("expires", "NaN"), ("expires", "-Infinity")])
def test_job_spec_refuses_non_finite_times(field, value):
    doc = {"job": "x", "rank": 0, "batch": 1, "timeout": 1, "expires": 1.7e9}
    doc[field] = json.loads(value)
    with pytest.raises(FsdError, match=f"{field}=.* must be a finite"):
        JobSpec.from_json(doc)


def test_worker_caps_the_job_at_its_own_timeout(redis_server, redis_client):
    program = worker_program(MODEL, partition(MODEL, 2, "connectivity"), 0)
    channel = RedisQueueChannel.from_url(redis_server.url)
    spec = JobSpec("pinned", 0, 1, 1e9, time.time() + 1e9)  # nobody ever sends this job's inputs
    started = time.monotonic()
    with pytest.raises(ChannelTimeout, match="rank 0: no layer-1 activations from coordinator"):
        run_worker(program, channel, spec, max_timeout=0.5)
    assert time.monotonic() - started < 5  # the worker's 0.5 s, not the invocation's 1e9 s


def test_a_worker_set_up_for_another_model_refuses_the_job(redis_server, redis_client):
    coordinator = FsdConfig(workers=2, model=ModelSpec(neurons=64, layers=4), redis_url="redis://x")
    worker = FsdConfig(workers=2, rank=1, model=ModelSpec(neurons=64, layers=4, ymax=16.0), redis_url="redis://y")
    # the channel's address may differ between ranks, its kind may not
    assert coordinator.deployment() == FsdConfig(workers=2, rank=0, redis_url="redis://other:6379",
                                                 model=ModelSpec(neurons=64, layers=4)).deployment()
    assert coordinator.deployment() != FsdConfig(workers=2, rank=0, channel="s3", s3_endpoint="http://s3",
                                                 model=ModelSpec(neurons=64, layers=4)).deployment()
    assert coordinator.deployment() != worker.deployment()
    spec = JobSpec("mixed", 1, 1, 5.0, time.time() + 5, coordinator.deployment())
    assert JobSpec.from_json(json.loads(spec.to_json())) == spec
    program = worker_program(MODEL, partition(MODEL, 2, "connectivity"), 1)
    channel = RedisQueueChannel.from_url(redis_server.url)
    with pytest.raises(FsdError, match="rank 1 is configured for another deployment than its coordinator: .*"
                                       "ymax=16.0.*give every rank the same FSD_MODEL, FSD_WORKERS, "
                                       "FSD_PARTITIONER and FSD_CHANNEL"):
        run_worker(replace(program, deployment=worker.deployment()), channel, spec)
    assert not redis_client.keys("fsd:*")  # refused before touching the channel


def test_worker_refuses_a_job_already_expired(redis_server, redis_client):
    program = worker_program(MODEL, partition(MODEL, 2, "connectivity"), 1)
    channel = RedisQueueChannel.from_url(redis_server.url)
    with pytest.raises(JobAborted, match="rank 1: job late expired .* before this rank started it"):
        run_worker(program, channel, JobSpec("late", 1, 1, 5.0, time.time() - 1))
    assert not redis_client.keys("fsd:*")  # refused before touching the channel


class _Recording:
    """An invoker that keeps every spec and future it was asked for."""

    def __init__(self, inner):
        self.inner, self.specs, self.futures = inner, [], []

    def submit(self, spec):
        self.specs.append(spec)
        self.futures.append(self.inner.submit(spec))
        return self.futures[-1]


@pytest.mark.parametrize("bad", [X[:, :-1], X[None], np.full((1, SPEC.neurons), np.nan, dtype=np.float32),
                                 np.full((1, SPEC.neurons), 1e39), np.empty((0, SPEC.neurons))])
def test_bad_input_fails_before_any_worker_is_invoked(redis_server, redis_client, bad):
    coordinator, _ = _coordinator(RedisQueueChannel.from_url(redis_server.url), 2)
    recording = coordinator.invoker = _Recording(coordinator.invoker)
    with pytest.raises(FsdError, match="inputs"):
        coordinator.run(bad)
    assert recording.specs == [] and not redis_client.keys("fsd:*")
    np.testing.assert_allclose(coordinator.run(X).outputs, EXPECTED, rtol=1e-5, atol=1e-6)


def test_job_spec_carries_the_coordinators_deadline(redis_server, redis_client):
    coordinator, _ = _coordinator(RedisQueueChannel.from_url(redis_server.url), 2, timeout=5.0)
    recording = coordinator.invoker = _Recording(coordinator.invoker)
    before = time.time()
    coordinator.run(X)
    assert [s.rank for s in recording.specs] == [0, 1]
    assert all(before < s.expires <= time.time() + 5.0 and 0 < s.timeout <= 5.0 for s in recording.specs)


@pytest.mark.parametrize("kind", ["redis", "s3"])
def test_a_failed_job_is_aborted_so_its_workers_stop_at_once(request, kind):
    if kind == "redis":
        request.getfixturevalue("redis_client")
        channel = RedisQueueChannel.from_url(request.getfixturevalue("redis_server").url)
    else:
        channel = request.getfixturevalue("s3_channel")
    parts = partition(MODEL, 3, "connectivity")
    programs = {r: worker_program(MODEL, parts, r) for r in range(3)}
    programs[1] = worker_program(MODEL, parts, 0)  # rank 1 fails at once; ranks 0 and 2 wait for its messages
    coordinator, _ = _coordinator(channel, 3, timeout=30.0, programs=programs)
    recording = coordinator.invoker = _Recording(coordinator.invoker)
    with pytest.raises(WorkerFailed, match="rank 1: job .* invoked rank 1"):
        coordinator.run(X)
    wait(recording.futures, timeout=10)
    assert all(f.done() for f in recording.futures)  # well before the job's 30 s
    aborted = [f.exception() for r, f in enumerate(recording.futures) if r != 1]
    assert all(isinstance(e, WorkerFailed) and "was aborted by the coordinator" in str(e) for e in aborted), aborted
    coordinator.invoker = recording.inner
    coordinator.invoker.programs[1] = worker_program(MODEL, parts, 1)
    np.testing.assert_allclose(coordinator.run(X).outputs, EXPECTED, rtol=1e-5, atol=1e-6)


def test_a_job_whose_coordinator_died_leaves_nothing_once_a_coordinator_starts(s3_channel):
    """The coordinator sends the inputs, invokes the workers and dies: the ranks delete what they read, and
    the next coordinator to start sweeps the outputs nobody gathered once the job has expired."""
    parts = partition(MODEL, 2, "connectivity")
    plan = coordinator_plan(MODEL, parts)
    invoker = LocalInvoker({r: worker_program(MODEL, parts, r) for r in range(2)}, s3_channel)
    expires = time.time() + 5
    job = f"{int(time.time()) - 120}-{'d' * 32}"  # as if it had expired two minutes ago: sweepable at once
    xt = np.ascontiguousarray(X.T)
    s3_channel.endpoint(job, COORDINATOR).send([Message(r, 1, COORDINATOR, xt[c].tobytes())
                                               for r, c in enumerate(plan.scatter)])
    futures = [invoker.submit(JobSpec(job, r, len(X), 5.0, expires)) for r in range(2)]
    assert all(f.result(timeout=30).rank == r for r, f in enumerate(futures))
    left = s3_channel.client.list("fsd")[0]
    assert sorted(left) == [f"fsd/{job}/{MODEL.spec.layers + 1}/{r}-c" for r in range(2)]  # the outputs only
    server = s3_channel.client.endpoint
    config = FsdConfig.from_env({"FSD_WORKERS": "2", "FSD_CHANNEL": "s3", "FSD_S3_ENDPOINT": server,
                                 "FSD_MODEL": "neurons=64,layers=2", "FSD_WORKER_URLS": "http://127.0.0.1:1,http://127.0.0.1:1"})
    build_coordinator(config)
    assert s3_channel.client.list("fsd")[0] == []


def test_job_ids_start_with_their_expiry():
    job = job_id(1.7e9 + 0.5)
    assert job.startswith("1700000001-") and job != job_id(1.7e9 + 0.5)


def test_a_rank_owning_no_output_sends_nothing_and_is_not_waited_for(redis_server, redis_client):
    base = partition(MODEL, 3, "connectivity")
    last = base.owners[-1].copy()
    last[last == 2] = 0  # rank 2 computes no output neuron (it still works in earlier layers)
    parts = Partition(3, base.owners[:-1] + (last,), "by hand")
    programs = {r: worker_program(MODEL, parts, r) for r in range(3)}
    assert programs[2].steps[-1].sends == () and all(len(b) for p in programs.values()
                                                     for s in p.steps for _, b in s.sends)
    channel = RedisQueueChannel.from_url(redis_server.url)
    coordinator = Coordinator(coordinator_plan(MODEL, parts), channel, LocalInvoker(programs, channel), 5.0)
    result = coordinator.run(X)
    np.testing.assert_allclose(result.outputs, EXPECTED, rtol=1e-5, atol=1e-6)
    exchanged = sum(1 for p in programs.values() for s in p.steps for d, _ in s.sends if d != COORDINATOR)
    assert result.exchange.messages == exchanged
    assert result.workers[2].usage.messages == sum(len(s.sends) for s in programs[2].steps)
    scattered = sum(1 for c in coordinator.plan.scatter if len(c))
    assert result.usage.messages == scattered + exchanged + 2  # two ranks gather outputs, not three


def test_more_than_a_hundred_in_process_workers_share_one_redis_client(redis_server, redis_client):
    from bench.fsd import _channel

    spec = ModelSpec(neurons=128, layers=2, seed=2)
    model = generate(spec)
    channel = _channel("redis", redis_server.url, "", workers=120)
    parts = partition(model, 120, "connectivity")
    programs = {r: worker_program(model, parts, r) for r in range(120)}
    coordinator = Coordinator(coordinator_plan(model, parts), channel, LocalInvoker(programs, channel), 30.0)
    x = inputs(spec, 2)
    np.testing.assert_allclose(coordinator.run(x).outputs, forward(model, x), rtol=1e-5, atol=1e-6)
