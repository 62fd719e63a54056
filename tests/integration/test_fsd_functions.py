"""Coordinator and workers as real watchdog processes, talking through a real Redis or the local S3 server."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from fsd.model import ModelSpec, forward, generate, inputs
from fsd.s3_server import S3Server
from fsd.sigv4 import Credentials

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COORDINATOR = os.path.join(REPO, "functions", "fsd-coordinator")
WORKER = os.path.join(REPO, "functions", "fsd-worker")
MODEL = "neurons=128,layers=4,seed=3,weight_jitter=0.5"
WORKERS = 2


@pytest.fixture
def s3_server():
    """The local S3-compatible server on a free loopback port, checking SigV4 signatures."""
    server = S3Server(credentials=Credentials("test-key", "test-secret")).start()
    yield server
    server.stop()


def _deploy(watchdogs, env: dict[str, str]):
    common = {"FSD_WORKERS": str(WORKERS), "FSD_MODEL": MODEL, "FSD_TIMEOUT": "4", "max_batch_size": "4",
              "batch_timeout": "0.05", **env}
    workers = [watchdogs(WORKER, wait=False, FSD_RANK=str(r), **common) for r in range(WORKERS)]
    coordinator = watchdogs(COORDINATOR, wait=False,
                            FSD_WORKER_URLS=",".join(w.url for w in _started(workers)), **common)
    _started([coordinator])
    return coordinator, workers


def _stop_all(procs) -> None:
    """SIGTERM every process first so that their drains overlap, then reap each."""
    for p in procs:
        p.signal(signal.SIGTERM)
    for p in procs:
        p.stop(10)


def _started(procs):
    from helpers import wait_until

    for p in procs:
        wait_until(lambda: requests.get(p.url + "/_/health", timeout=1).status_code == 200, 60,
                   what=f"watchdog {p.url} (log {p.log_path})")
    return procs


def _check_outputs(coordinator, samples=(0, 1, 2, 3)):
    spec = ModelSpec.parse(MODEL)
    expected = forward(generate(spec), np.stack([inputs(spec, 1, seed=k)[0] for k in samples]))
    with ThreadPoolExecutor(len(samples)) as pool:
        answers = list(pool.map(lambda k: requests.post(coordinator.url, json={"sample": k}, timeout=30), samples))
    for k, answer, want in zip(samples, answers, expected):
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        np.testing.assert_allclose(np.asarray(doc["output"], dtype=np.float32), want, rtol=1e-5, atol=1e-5)
        run = doc["run"]
        assert run["workers"] == WORKERS and run["cost"]["per_example_usd"] > 0
        assert run["exchange"]["bytes"] > 0 and run["usage"]["messages"] > 0
    return [a.json()["run"] for a in answers]


def test_redis_channel_through_watchdogs(watchdogs, redis_server, redis_client):
    coordinator, workers = _deploy(watchdogs, {"FSD_CHANNEL": "redis", "FSD_REDIS_URL": redis_server.url})
    runs = _check_outputs(coordinator)
    assert runs[0]["channel"] == "redis" and "send" in runs[0]["usage"]["requests"]
    assert not redis_client.keys("fsd:*")  # every job cleaned up after itself
    _stop_all([coordinator, *workers])


def test_s3_channel_through_watchdogs(watchdogs, s3_server):
    coordinator, workers = _deploy(watchdogs, {"FSD_CHANNEL": "s3", "FSD_S3_ENDPOINT": s3_server.url,
                                         "FSD_S3_ACCESS_KEY": "test-key", "FSD_S3_SECRET_KEY": "test-secret"})
    runs = _check_outputs(coordinator, samples=(5, 6))
    assert runs[0]["channel"] == "s3" and runs[0]["usage"]["requests"]["put"] > 0
    assert not any(s3_server.store.buckets["fsd"])  # the coordinator deleted every object
    _stop_all([coordinator, *workers])


def test_dead_worker_fails_the_request_within_the_timeout(watchdogs, redis_server, redis_client):
    coordinator, workers = _deploy(watchdogs, {"FSD_CHANNEL": "redis", "FSD_REDIS_URL": redis_server.url})
    assert requests.post(coordinator.url, json={"sample": 0}, timeout=30).status_code == 200
    workers[1].stop(10)
    started = time.monotonic()
    answer = requests.post(coordinator.url, json={"sample": 0}, timeout=30)
    elapsed = time.monotonic() - started
    assert answer.status_code == 500
    assert "rank 1" in answer.text and "unreachable" in answer.text, answer.text
    assert elapsed < 4 + 3 + 2  # FSD_TIMEOUT + HTTP grace + slack: a bound, never a hang
    _stop_all([coordinator, workers[0]])


def test_bad_requests_answer_400_and_leave_the_deployment_healthy(watchdogs, redis_server, redis_client):
    coordinator, workers = _deploy(watchdogs, {"FSD_CHANNEL": "redis", "FSD_REDIS_URL": redis_server.url})
    n = ModelSpec.parse(MODEL).neurons
    for body in [json.dumps({"input": [[1]] * n}), json.dumps({"input": [None] * n}), json.dumps({"input": [1] * 3}),
                 '{"input": [1e39' + ",0" * (n - 1) + "]}", '{"input": [NaN' + ",0" * (n - 1) + "]}",
                 json.dumps({"sample": -1}), json.dumps({"sample": True}), json.dumps({"nothing": 1}), "null",
                 json.dumps({"sample": 1, "input": [0.5] * n})]:  # the sample's output came back for the input
        answer = requests.post(coordinator.url, data=body, timeout=30)
        assert answer.status_code == 400, (body[:40], answer.status_code, answer.text)
        assert re.search(r"input|sample|JSON", answer.text), answer.text  # says what was wrong
    for body in ["null", "[1]", "[]", '{"job": "j", "rank": 0, "batch": 1, "timeout": NaN, "expires": 1e10}',
                 '{"job": "j", "rank": 0, "batch": 1, "timeout": 1, "expires": Infinity}',
                 "[" * 100000 + "]" * 100000]:  # RecursionError: a 500, and every job of its batch with it
        answer = requests.post(workers[0].url, data=body, timeout=30)
        assert answer.status_code == 400 and "bad job" in answer.text, (body[:40], answer.status_code, answer.text)
    _check_outputs(coordinator)
    _stop_all([coordinator, *workers])


def test_one_invocation_cannot_hold_a_worker_past_its_own_timeout(watchdogs, redis_server, redis_client):
    coordinator, workers = _deploy(watchdogs, {"FSD_CHANNEL": "redis", "FSD_REDIS_URL": redis_server.url})
    pinned = {"job": "pinned", "rank": 0, "batch": 1, "timeout": 1e9, "expires": time.time() + 1e9}
    started = time.monotonic()
    answer = requests.post(workers[0].url, json=pinned, timeout=30)  # nobody sends this job anything
    assert answer.status_code == 500 and "before the deadline" in answer.text, answer.text
    assert time.monotonic() - started < 4 + 6  # the worker's FSD_TIMEOUT + slack, not 1e9 s
    _check_outputs(coordinator)
    _stop_all([coordinator, *workers])


def test_a_failed_job_does_not_delay_the_next_one(watchdogs, redis_server, redis_client):
    coordinator, workers = _deploy(watchdogs, {"FSD_CHANNEL": "redis", "FSD_REDIS_URL": redis_server.url})
    assert requests.post(coordinator.url, json={"sample": 0}, timeout=30).status_code == 200
    workers[1].signal(signal.SIGSTOP)  # rank 1 hangs: the job fails at FSD_TIMEOUT, rank 0 is left waiting
    try:
        failed = requests.post(coordinator.url, json={"sample": 1}, timeout=30)
        assert failed.status_code == 500, failed.text
    finally:
        workers[1].signal(signal.SIGCONT)  # rank 1 now finds the dead job in its queue, already expired
    started = time.monotonic()
    _check_outputs(coordinator, samples=(2,))
    # Rank 0 dropped the dead job when it was aborted, rank 1 refused it as expired: the next job runs at
    # once instead of queueing behind a dead one for a fresh FSD_TIMEOUT (4 s).
    assert time.monotonic() - started < 3.5
    _stop_all([coordinator, *workers])


def test_a_job_failing_with_any_error_costs_only_itself_in_its_batch(redis_server, redis_client, monkeypatch):
    """The worker's handler returned only FsdError per job: anything else (numpy refusing a 3-byte block,
    pushed into the job's inbox as a well-formed frame; here redis-py refusing a job id it cannot encode)
    raised from handle_batch, so the whole batch failed and the watchdog's bisection ran again the
    batch-mates, jobs that had finished and consumed their inputs. A block of the wrong size, and a frame that
    is not a frame at all, are ChannelErrors naming the job and the rank."""
    import importlib.util

    from batcher.request import Request
    from fsd.channel import Message
    from fsd.errors import ChannelError, JobAborted
    from fsd.partition import COORDINATOR
    from fsd.redis_channel import frames, inbox_key
    from fsd.worker import JobSpec

    for key, value in {"FSD_WORKERS": str(WORKERS), "FSD_MODEL": MODEL, "FSD_RANK": "0",
                       "FSD_REDIS_URL": redis_server.url, "FSD_TIMEOUT": "2"}.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("fsd_worker_handler", os.path.join(WORKER, "handler.py"))
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    state = handler.load()
    deployment = state[0].deployment
    redis_client.rpush(inbox_key("bad", 0), *frames(Message(0, 1, COORDINATOR, b"abc"), 1024))
    redis_client.rpush(inbox_key("junk", 0), b"\x00\x00\x00\x02{}")
    jobs = [JobSpec("bad", 0, 1, 2.0, time.time() + 2, deployment),
            JobSpec("late", 0, 1, 2.0, time.time() - 1, deployment),
            JobSpec("junk", 0, 1, 2.0, time.time() + 2, deployment),
            JobSpec("\ud800", 0, 1, 2.0, time.time() + 2, deployment)]
    outputs = handler.handle_batch(state, [Request(body=job.to_json()) for job in jobs])
    assert [type(o) for o in outputs] == [ChannelError, JobAborted, ChannelError, UnicodeEncodeError]
    assert re.search(r"^rank 0: job bad got 3 bytes of layer-1 activations from coordinator where", str(outputs[0]))
    assert re.search(r"rank 0 received a malformed frame of 6 bytes .* in job junk", str(outputs[2]))
