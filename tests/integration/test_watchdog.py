"""The watchdog as a real gunicorn process over real HTTP: the OpenFaaS contract and batching."""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import os
import re
import signal
import time

import pytest
import requests

from helpers import REPO, wait_until, write_handler

HANDLER = """
import json, os, time
from batcher import BadInput, Response

def load():
    time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))
    return {"delay": float(os.environ.get("DELAY", "0.02")), "mode": os.environ.get("MODE", "")}

def handle_batch(state, requests):
    time.sleep(state["delay"])
    if state["mode"] == "miscount":
        return ["only one"]
    if any(r.body == b"bad" for r in requests):
        raise BadInput("body 'bad' is not acceptable")
    if any(r.body == b"crash" for r in requests):
        raise RuntimeError("model exploded")
    if any(r.body.startswith(b"sleep") for r in requests):  # "sleep": 3 s, "sleep5": 5 s
        time.sleep(max(float(r.body[5:] or 3) for r in requests if r.body.startswith(b"sleep")))
    if any(r.body == b"exit" for r in requests):
        raise SystemExit(1)
    return [Response(b"x", 200, {"X-Bad": "a\\r\\nInjected: yes"}) if r.body == b"unsendable" else
            Response(json.dumps({"echo": r.body.decode(errors="replace"), "n": len(requests),
                                 "method": r.method, "path": r.path, "query": r.query,
                                 "x_test": r.header("x-test")}).encode(), 200,
                     {"Content-Type": "application/json"}) for r in requests]
"""


@pytest.fixture
def handler_dir(tmp_path):
    return write_handler(str(tmp_path / "fn"), HANDLER)


@pytest.fixture(params=["asyncio", "gthread"])
def watchdogs(request, watchdogs):
    """Every contract test runs against both HTTP engines."""
    def start(function_dir, wait=True, **env):
        return watchdogs(function_dir, wait, **{"http_engine": request.param, **env})

    return start


def post_many(url, bodies, workers=32, timeout=30):
    with cf.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: requests.post(url, data=b, timeout=timeout), bodies))


def test_batches_form_under_concurrent_load(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=16, batch_timeout="50ms", DELAY="0.05")
    responses = post_many(wd.url + "/", [f"r{i}".encode() for i in range(64)])
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["echo"] for r in responses] == [f"r{i}" for i in range(64)]
    sizes = [int(r.headers["X-Batch-Size"]) for r in responses]
    assert max(sizes) > 1 and max(sizes) <= 16
    assert all(float(r.headers["X-Duration-Seconds"]) > 0 for r in responses)
    metrics = requests.get(wd.metrics_url, timeout=5).text
    assert 'http_requests_total{code="200",method="post"} 64' in metrics
    assert "faas_infer_batch_size_bucket" in metrics and "faas_infer_cold_start_seconds" in metrics
    assert "faas_infer_queue_wait_seconds_count 64" in metrics
    # what load() left alive is frozen out of the cyclic GC's full collections (a watchdog and flask at least)
    frozen = re.search(r"^faas_infer_gc_frozen_objects (\S+)$", metrics, re.M)
    assert frozen and float(frozen.group(1)) > 10_000


def test_request_reaches_handler_with_method_path_query_headers(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=1)
    r = requests.put(wd.url + "/sub/path?q=1&q=2", data=b"x", headers={"X-Test": "yes"}, timeout=10)
    assert r.json() == {"echo": "x", "n": 1, "method": "PUT", "path": "/sub/path", "query": "q=1&q=2",
                        "x_test": "yes"}


def test_one_bad_input_in_a_batch_fails_alone(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=8, batch_timeout="200ms", DELAY="0.01")
    bodies = [b"a", b"b", b"bad", b"c", b"crash", b"d", b"e", b"f"]
    responses = post_many(wd.url, bodies, workers=8)
    status = dict(zip(bodies, (r.status_code for r in responses)))
    assert status.pop(b"bad") == 400 and status.pop(b"crash") == 500
    assert set(status.values()) == {200}
    by_body = dict(zip(bodies, responses))
    assert "body 'bad' is not acceptable" in by_body[b"bad"].text
    assert "RuntimeError: model exploded" in by_body[b"crash"].text


def test_an_unsendable_response_or_sys_exit_fails_its_request_only_and_the_instance_serves_on(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=8, batch_timeout="50ms")
    responses = post_many(wd.url + "/x", [b"unsendable", b"ok1", b"exit", b"ok2"] * 3)
    by_body = {}
    for body, r in zip([b"unsendable", b"ok1", b"exit", b"ok2"] * 3, responses):
        by_body.setdefault(body, set()).add(r.status_code)
        assert "Injected" not in r.headers and "X-Duration-Seconds" in r.headers
    assert by_body == {b"unsendable": {500}, b"ok1": {200}, b"exit": {500}, b"ok2": {200}}
    assert "cannot be sent" in responses[0].text and "CR, LF or NUL" in responses[0].text
    assert "SystemExit" in responses[2].text
    later = post_many(wd.url, [f"later{i}".encode() for i in range(8)])
    assert [r.status_code for r in later] == [200] * 8


def test_framing_headers_a_handler_sets_are_the_servers_own_and_sent_once(watchdogs, tmp_path):
    # gthread sent the handler's Content-Length beside its own: Go's client (the gateway) refuses an answer
    # with two values ("message cannot contain multiple Content-Length headers"), so the caller got a 502.
    folder = write_handler(str(tmp_path / "framing"), """
from batcher import Response

def handle_batch(state, requests):
    return [Response(b"body", 200, {"Content-Length": "100", "Date": "yesterday", "X-Kept": "yes"})
            for r in requests]
""")
    wd = watchdogs(folder, max_batch_size=1)
    conn = http.client.HTTPConnection("127.0.0.1", wd.port, timeout=10)
    conn.request("POST", "/", body=b"x")
    got = conn.getresponse()
    headers = [(k.lower(), v) for k, v in got.getheaders()]
    assert got.read() == b"body" and ("x-kept", "yes") in headers
    assert [v for k, v in headers if k == "content-length"] == ["4"]
    assert [v for k, v in headers if k == "date"] != ["yesterday"] and len([k for k, _ in headers if k == "date"]) == 1
    conn.close()


def test_wrong_number_of_outputs_is_500_with_both_counts(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=4, batch_timeout="100ms", MODE="miscount")
    responses = post_many(wd.url, [b"1", b"2", b"3"], workers=3)
    assert all(r.status_code == 500 for r in responses)
    assert any("returned 1 responses for" in r.text for r in responses)


def test_429_past_max_inflight_and_ready_reports_it(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_inflight=2, max_batch_size=1, DELAY="0.5")
    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(requests.post, wd.url, data=b"x", timeout=30) for _ in range(6)]
        time.sleep(0.2)
        ready = requests.get(wd.url + "/_/ready", timeout=5).status_code
        codes = sorted(f.result().status_code for f in futures)
    assert ready == 429
    assert codes.count(200) >= 2 and 429 in codes
    limited = [f.result() for f in futures if f.result().status_code == 429][0]
    assert limited.text.strip() == "Concurrent request limit exceeded. Max concurrent requests: 2"


def test_504_past_exec_timeout_and_x_timeout(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, exec_timeout="1s", max_batch_size=1, DELAY="0")
    r = requests.post(wd.url, data=b"sleep", headers={"X-Timeout": "200ms"}, timeout=10)
    assert r.status_code == 504 and "timeout of 0.2s exceeded" in r.text
    r = requests.post(wd.url, data=b"sleep", timeout=10)  # queued behind the first, still running
    assert r.status_code == 504 and "timeout of 1s exceeded" in r.text
    # The abandoned calls still finish in the background; then the instance serves normally again.
    wait_until(lambda: requests.post(wd.url, data=b"fine", timeout=10).status_code == 200, 15,
               what="instance recovers after timeouts")


def test_a_batch_hung_past_exec_timeout_makes_the_instance_unhealthy_and_sheds_requests(watchdogs, handler_dir):
    # Its thread cannot be abandoned: every request admitted behind it waited for a 504 of its own, while
    # /_/health and /_/ready said 200 and the platform kept sending more.
    wd = watchdogs(handler_dir, exec_timeout="1s", max_batch_size=1, DELAY="0")
    assert requests.post(wd.url, data=b"sleep5", timeout=10).status_code == 504  # the batch runs on for 4 s
    # hung once CANCEL_GRACE_SECONDS (1 s) past exec_timeout
    wait_until(lambda: requests.get(wd.url + "/_/health", timeout=5).status_code == 503, 5, what="reported hung")
    for path in ("/_/health", "/_/ready"):
        r = requests.get(wd.url + path, timeout=5)
        assert r.status_code == 503 and "past exec_timeout=1s" in r.text
    r = requests.post(wd.url, data=b"fine", timeout=10)
    assert r.status_code == 503 and "past exec_timeout=1s" in r.text
    assert 'faas_infer_requests_refused_total{reason="hung"} 1' in requests.get(wd.metrics_url, timeout=5).text
    wait_until(lambda: requests.get(wd.url + "/_/health", timeout=5).status_code == 200, 10,
               what="healthy once the batch returned")
    assert requests.post(wd.url, data=b"fine", timeout=10).status_code == 200


def test_chunked_request_body_is_decoded(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=1)
    conn = http.client.HTTPConnection("127.0.0.1", wd.port, timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for chunk in (b"h", b"ello chun", b"ked"):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 200
    assert b'"echo": "hello chunked"' in response.read()


def test_413_over_max_request_bytes(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_request_bytes="1Ki", max_batch_size=1)
    r = requests.post(wd.url, data=b"x" * 4096, timeout=10)
    assert r.status_code == 413 and "max_request_bytes" in r.text
    assert requests.post(wd.url, data=b"small", timeout=10).status_code == 200


def test_slo_admission_sheds_overload_with_503(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, max_batch_size=2, latency_slo="150ms", DELAY="0.05")
    requests.post(wd.url, data=b"warm", timeout=10)
    responses = post_many(wd.url, [b"x"] * 60, workers=60)
    codes = [r.status_code for r in responses]
    assert 503 in codes and 200 in codes
    assert set(codes) <= {200, 503}
    refused = next(r for r in responses if r.status_code == 503)
    assert "exceeds latency_slo 150ms" in refused.text
    assert "faas_infer_requests_refused_total" in requests.get(wd.metrics_url, timeout=5).text


def test_an_instance_that_ran_only_batches_of_one_learns_larger_batches(watchdogs, handler_dir):
    # 50 ms a batch whatever its size, 100 ms SLO, 50 req/s: priced proportionally from batches of 1, a
    # batch of 8 was predicted at 400 ms, every request that would have joined one was refused (154 of
    # 236) and every batch stayed at 1.
    wd = watchdogs(handler_dir, max_batch_size=8, latency_slo="100ms", DELAY="0.05")
    for _ in range(3):
        assert requests.post(wd.url, data=b"warm", timeout=10).status_code == 200
    start = time.monotonic()

    def paced(i):
        time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        return requests.post(wd.url, data=b"x", timeout=10)

    with cf.ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(paced, range(100)))
    answered = [r for r in responses if r.status_code == 200]
    # the defect answered 35%; quiet, all 100 are; on a host starved by other work (load 15 on 2 cores) 73
    # were, the rest shed as they should be: the bound sits between
    assert len(answered) >= 60 and {r.status_code for r in responses} <= {200, 503}
    assert max(int(r.headers["X-Batch-Size"]) for r in answered) > 1


def test_health_follows_lock_file_and_sigterm_drains_without_loss(watchdogs, handler_dir, tmp_path):
    wd = watchdogs(handler_dir, max_batch_size=8, batch_timeout="20ms", DELAY="0.05", healthcheck_interval="1s")
    lock = tmp_path / "wd0" / ".lock"
    assert lock.exists() and requests.get(wd.url + "/_/health", timeout=5).status_code == 200
    with cf.ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(requests.post, wd.url, data=f"{i}".encode(), timeout=30) for i in range(40)]
        time.sleep(0.05)
        wd.signal(signal.SIGTERM)
        wait_until(lambda: not lock.exists(), 5, what="lock file removed")
        health = requests.get(wd.url + "/_/health", timeout=5).status_code
        ready = requests.get(wd.url + "/_/ready", timeout=5).status_code
        results = [f.result() for f in futures]
    assert (health, ready) == (503, 503)
    assert [r.status_code for r in results] == [200] * 40
    assert [r.json()["echo"] for r in results] == [str(i) for i in range(40)]
    assert wd.proc.wait(20) == 0


def test_suppress_lock_writes_no_file(watchdogs, handler_dir, tmp_path):
    wd = watchdogs(handler_dir, suppress_lock="true")
    assert not (tmp_path / "wd0" / ".lock").exists()
    assert requests.get(wd.url + "/_/health", timeout=5).status_code == 503  # the contract: no lock, unhealthy
    (tmp_path / "wd0" / ".lock").touch()  # written by whoever suppressed ours
    assert requests.get(wd.url + "/_/health", timeout=5).status_code == 200


def test_config_error_exits_with_a_clear_message(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, wait=False, max_batch_size="0")
    assert wd.proc.wait(20) == 2
    assert "max_batch_size=0: must be >= 1" in wd.log()


def test_a_bad_log_level_exits_with_a_clear_message_not_a_traceback(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, wait=False, LOG_LEVEL="loud")
    assert wd.proc.wait(20) == 2
    assert "configuration error: LOG_LEVEL='loud': not a logging level (one of DEBUG" in wd.log()
    assert "Traceback" not in wd.log()


@pytest.mark.parametrize("level, child", [("warn", "false"), (" info", "false"), (" info", "true")])
def test_a_log_level_logging_takes_starts_the_watchdog(watchdogs, handler_dir, level, child):
    # "warn" was refused (exit 2) since LOG_LEVEL was checked; " info" passed the check and crashed basicConfig
    # (the watchdog's, or the handler process's).
    wd = watchdogs(handler_dir, LOG_LEVEL=level, handler_process=child)
    assert requests.post(wd.url, data=b"a", timeout=10).status_code == 200
    assert "Traceback" not in wd.log()


def test_missing_handler_fails_at_start_naming_the_path(watchdogs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    wd = watchdogs(str(empty), wait=False)
    assert wd.proc.wait(30) == 2
    assert "no handler at" in wd.log() and os.path.join(str(empty), "handler.py") in wd.log()


def test_classic_single_request_handler_is_served(watchdogs, tmp_path):
    folder = write_handler(str(tmp_path / "classic"), """
        def handle(req):
            return "hi " + req.text
    """)
    wd = watchdogs(folder)
    assert requests.post(wd.url, data=b"there", timeout=10).text == "hi there"


def test_torch_threads_follow_the_cpu_limit(watchdogs, tmp_path):
    folder = write_handler(str(tmp_path / "threads"), """
        import torch

        def handle_batch(state, requests):
            return [{"threads": torch.get_num_threads()} for _ in requests]
    """)
    one = watchdogs(folder, cpu_limit="500m")
    assert requests.post(one.url, data=b"", timeout=30).json() == {"threads": 1}
    many = watchdogs(folder, cpu_limit="64")
    assert requests.post(many.url, data=b"", timeout=30).json()["threads"] == len(os.sched_getaffinity(0))


def test_a_call_without_a_body_is_told_so(watchdogs):
    """curl without -d, or a GET, to a JSON function: 400 saying the body is empty, not a decoder's message."""
    wd = watchdogs(os.path.join(REPO, "templates", "python3-torch-batch", "function"))
    for answer in (requests.post(wd.url, timeout=30), requests.get(wd.url, timeout=30)):
        assert answer.status_code == 400 and answer.text.strip() == "request body is empty: expected JSON"


def test_mlp_example_takes_raw_float32_and_json_alike(watchdogs):
    """The MLP example over real HTTP: a raw float32 body and the same numbers as JSON get one answer; a
    raw body of the wrong size is a 400 naming the sizes, and its batch-mates are answered."""
    import array
    import json as _json

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wd = watchdogs(os.path.join(repo, "functions", "mlp"), max_batch_size=8, cpu_limit=1)
    features = [((i * 13) % 50) / 25 - 1 for i in range(256)]
    raw = array.array("f", features).tobytes()
    with cf.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda body_type: requests.post(wd.url, data=body_type[0], timeout=30,
                                                                 headers={"Content-Type": body_type[1]}),
                                [(raw, "application/octet-stream"), (_json.dumps({"features": features}),
                                 "application/json"), (raw[:-4], "application/octet-stream")] * 2))
    for i in range(0, 6, 3):
        by_raw, by_json, short = answers[i:i + 3]
        assert by_raw.status_code == 200 and by_json.status_code == 200
        assert by_raw.json()["class"] == by_json.json()["class"]
        assert short.status_code == 400 and "got 1020 bytes" in short.text


ASYNC_HANDLER = """
import asyncio, json
from batcher import BadInput

async def load():
    # what load() makes on the handler's loop serves every later call: a queue bound to that loop
    return {"loop": asyncio.get_running_loop(), "calls": asyncio.Queue()}

async def handle_batch(state, requests):
    assert asyncio.get_running_loop() is state["loop"]
    await state["calls"].put(len(requests))
    await asyncio.sleep(0.01)
    if any(r.body == b"bad" for r in requests):
        raise BadInput("body 'bad' is not acceptable")
    if any(r.body == b"exit" for r in requests):
        raise SystemExit(1)
    return [{"echo": r.body.decode(), "calls": state["calls"].qsize()} for r in requests]
"""


def test_an_async_handler_is_awaited_on_its_own_loop_and_fails_per_request_like_a_plain_one(watchdogs, tmp_path):
    wd = watchdogs(write_handler(str(tmp_path / "fn"), ASYNC_HANDLER), max_batch_size=8, batch_timeout="100ms")
    bodies = [b"a", b"bad", b"c", b"exit", b"e"]
    responses = post_many(wd.url, bodies, workers=5)
    status = dict(zip(bodies, (r.status_code for r in responses)))
    assert status == {b"a": 200, b"bad": 400, b"c": 200, b"exit": 500, b"e": 200}
    assert "body 'bad' is not acceptable" in responses[1].text
    assert responses[0].json()["echo"] == "a"
    again = requests.post(wd.url, data=b"later", timeout=10)  # the loop survived the SystemExit
    assert again.status_code == 200 and again.json()["calls"] > 1


HANGING_ASYNC_HANDLER = """
import asyncio

async def {entry}:
    batch = requests if isinstance(requests, list) else [requests]
    if any(r.body == b"hang" for r in batch):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            open({cancelled!r}, "w").close()
            raise
    return [r.body for r in batch] if isinstance(requests, list) else requests.body
"""


@pytest.mark.parametrize("entry", ["handle_batch(state, requests)", "handle(requests)"])
def test_an_async_handler_hung_past_exec_timeout_is_cancelled_and_the_instance_serves_on(watchdogs, tmp_path, entry):
    # Unlike a plain function's thread, a coroutine can be stopped: left to run, it held the batch worker for
    # good, and the instance answered 503 to everything (hung) until the platform replaced it.
    cancelled = tmp_path / "cancelled"
    folder = write_handler(str(tmp_path / "fn"), HANGING_ASYNC_HANDLER.format(entry=entry, cancelled=str(cancelled)))
    wd = watchdogs(folder, exec_timeout="1s", max_batch_size=1, max_inflight=1)
    hung = requests.post(wd.url, data=b"hang", timeout=10)
    assert hung.status_code == 504 and "timeout of 1s exceeded" in hung.text
    wait_until(cancelled.exists, 10, what="the hung coroutine cancelled at exec_timeout")
    wait_until(lambda: requests.get(wd.url + "/_/health", timeout=5).status_code == 200, 5,
               what="healthy once the coroutine was cancelled")
    assert requests.get(wd.url + "/_/ready", timeout=5).status_code == 200
    fine = requests.post(wd.url, data=b"fine", timeout=10)
    assert (fine.status_code, fine.content) == (200, b"fine")
    assert "http_requests_in_flight 0" in requests.get(wd.metrics_url, timeout=5).text


def test_an_async_handler_cleaning_up_after_its_cancellation_is_not_reported_hung_meanwhile(watchdogs, tmp_path):
    # Cancelled at exec_timeout, a coroutine still takes a loop turn and its own cleanup to end: the batch was
    # reported hung meanwhile, so /_/health, /_/ready and every request got 503 for that window.
    cancelled, cleaned = tmp_path / "cancelled", tmp_path / "cleaned"
    folder = write_handler(str(tmp_path / "fn"), f"""
import asyncio

async def handle_batch(state, requests):
    if any(r.body == b"hang" for r in requests):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            open({str(cancelled)!r}, "w").close()
            await asyncio.sleep(0.5)  # closing a session, say
            open({str(cleaned)!r}, "w").close()
            raise
    return [r.body for r in requests]
""")
    wd = watchdogs(folder, exec_timeout="1s", max_batch_size=1)
    with cf.ThreadPoolExecutor(1) as pool:
        hung = pool.submit(requests.post, wd.url, data=b"hang", timeout=10)
        wait_until(cancelled.exists, 10, what="the coroutine cancelled")
        probes = []
        while not cleaned.exists():
            probes += [requests.get(wd.url + path, timeout=5).status_code for path in ("/_/health", "/_/ready")]
        assert hung.result().status_code == 504
    assert probes and set(probes) == {200}
    fine = requests.post(wd.url, data=b"fine", timeout=10)
    assert (fine.status_code, fine.content) == (200, b"fine")
    assert "hung" not in requests.get(wd.metrics_url, timeout=5).text


def test_an_async_handler_that_turns_its_cancellation_into_an_error_is_not_bisected_and_run_again(watchdogs,
                                                                                                    tmp_path):
    # A coroutine cancelled at exec_timeout that raises its own error (wrapping the CancelledError) was taken
    # for a failing batch: bisected, each half ran (and hung) for exec_timeout again, the instance hung as long.
    calls = tmp_path / "calls"
    folder = write_handler(str(tmp_path / "fn"), f"""
import asyncio

async def handle_batch(state, requests):
    with open({str(calls)!r}, "a") as f:
        f.write(f"{{len(requests)}}\\n")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError as exc:
        raise RuntimeError("upstream call aborted") from exc
    return [b"" for _ in requests]
""")
    wd = watchdogs(folder, exec_timeout="1s", max_batch_size=2, batch_timeout="500ms")
    responses = post_many(wd.url, [b"a", b"b"], workers=2)
    assert [r.status_code for r in responses] == [504, 504]
    wait_until(lambda: requests.get(wd.url + "/_/ready", timeout=5).status_code == 200, 10, what="ready again")
    time.sleep(1.5)  # a half would have been called by now
    assert calls.read_text().split() == ["2"]


HTTP_TEMPLATE_HANDLER = """
def handle(event, context):
    if event.path == "/none":
        return None
    if event.path == "/wrong":
        return ["not", "a", "dict"]
    return {"statusCode": 201, "headers": {"X-Seen": event.method + " " + context.hostname},
            "body": {"body": event.body.decode(), "q": event.query, "path": event.path,
                     "agent": event.headers.get("X-Test")}}
"""


def test_a_python3_http_template_handler_is_served_as_that_template_serves_it(watchdogs, tmp_path):
    wd = watchdogs(write_handler(str(tmp_path / "fn"), HTTP_TEMPLATE_HANDLER), max_batch_size=4)
    r = requests.post(wd.url + "/p?a=1&a=2&b=", data=b"hi", headers={"X-Test": "t"}, timeout=10)
    assert r.status_code == 201 and r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Seen"].startswith("POST ")
    assert r.json() == {"body": "hi", "q": {"a": "1", "b": ""}, "path": "/p", "agent": "t"}
    empty = requests.get(wd.url + "/none", timeout=10)
    assert empty.status_code == 200 and empty.content == b""
    wrong = requests.get(wd.url + "/wrong", timeout=10)
    assert wrong.status_code == 500 and "returned a list" in wrong.text and "statusCode" in wrong.text


COUNTING_HANDLER = """
import os

def handle(event, context):
    with open(os.path.join(os.environ["CALLS_DIR"], "calls"), "a") as f:
        f.write(event.body.decode() + "\\n")
    if event.body == b"bad":
        raise ValueError("bad one")
    return {"body": event.body.decode()}
"""


def test_a_request_handler_that_fails_one_request_is_not_called_again_for_its_batch_mates(watchdogs, tmp_path):
    # A python3-http handler is often not idempotent (a webhook, a record created): one failing request of a
    # batch must not have the others' calls made again, as bisecting a whole-batch failure would.
    wd = watchdogs(write_handler(str(tmp_path / "fn"), COUNTING_HANDLER), max_batch_size=4, batch_timeout="2s",
                   CALLS_DIR=str(tmp_path))
    bodies = [b"a", b"bad", b"c", b"d"]
    responses = post_many(wd.url, bodies, workers=4)
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert "bad one" in responses[1].text
    calls = (tmp_path / "calls").read_text().split()
    assert sorted(calls) == ["a", "bad", "c", "d"]
    assert {r.headers["X-Batch-Size"] for r in responses if r.status_code == 200} == {"4"}  # one batch


FLASK_READER_HANDLER = """
def handle(event, context):
    return {"body": {"type": event.headers.get("content-type"), "key": event.headers["x-api-key"],
                     "has": "X-API-KEY" in event.headers, "all": event.query.getlist("a"),
                     "first": event.query.get("a"), "blank": event.query["b"]}}
"""


def test_a_python3_http_handler_reads_headers_and_the_query_as_the_templates_flask_request(watchdogs, tmp_path):
    # The template hands over Flask's request.headers (case-insensitive) and request.args (getlist); code
    # written against them must work unchanged.
    wd = watchdogs(write_handler(str(tmp_path / "fn"), FLASK_READER_HANDLER))
    r = requests.post(wd.url + "/?a=1&a=2&b=", data=b"{}",
                      headers={"Content-Type": "application/json", "X-API-Key": "k"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"type": "application/json", "key": "k", "has": True, "all": ["1", "2"], "first": "1",
                        "blank": ""}


FAILING = {
    "batch": """
        def explode(body):
            raise RuntimeError(f"cannot read {body!r}")

        def handle_batch(state, requests):
            return [explode(r.body) if r.body == b"crash" else "ok" for r in requests]
    """,
    "classic": """
        def explode(body):
            raise RuntimeError(f"cannot read {body!r}")

        def handle(request):
            return explode(request.body) if request.body == b"crash" else "ok"
    """,
}


@pytest.mark.parametrize("entry,handler_process", [("batch", "false"), ("batch", "true"), ("classic", "false")])
def test_a_handler_that_raises_is_logged_with_its_traceback(watchdogs, tmp_path, entry, handler_process):
    """Without the traceback a user cannot find the line of their handler that failed."""
    wd = watchdogs(write_handler(str(tmp_path / "fn"), FAILING[entry]), max_batch_size=4, batch_timeout="100ms",
                   handler_process=handler_process)
    responses = post_many(wd.url, [b"a", b"crash", b"b"], workers=3)
    assert [r.status_code for r in responses] == [200, 500, 200]
    assert "RuntimeError: cannot read b'crash'" in responses[1].text
    wait_until(lambda: "Traceback" in wd.log(), 10, what="a traceback in the watchdog's log")
    log = wd.log()
    assert 'handler.py", line 3, in explode' in log and "RuntimeError: cannot read b'crash'" in log


CLIENT_ERRORS = {
    "batch": """
        from batcher import BadInput
        from batcher.errors import PayloadTooLarge

        def refuse(body):
            raise BadInput("not JSON") if body == b"garbage" else PayloadTooLarge("image over 4096 pixels")

        def handle_batch(state, requests):
            return [refuse(r.body) for r in requests]
    """,
    "classic": """
        from batcher import BadInput
        from batcher.errors import PayloadTooLarge

        def handle(request):
            raise BadInput("not JSON") if request.body == b"garbage" else PayloadTooLarge("image over 4096 pixels")
    """,
}


@pytest.mark.parametrize("entry,handler_process", [("batch", "false"), ("batch", "true"), ("classic", "false"),
                                                   ("classic", "true")])
def test_a_handler_refusing_bad_input_logs_nothing_however_often(watchdogs, tmp_path, entry, handler_process):
    # A 4xx raised by the handler was logged on every request (a traceback with handle(request) or in the handler
    # process, a line in-process): a client sending garbage at 1000 req/s flooded the log.
    wd = watchdogs(write_handler(str(tmp_path / "fn"), CLIENT_ERRORS[entry]), max_batch_size=4,
                   batch_timeout="20ms", handler_process=handler_process, LOG_LEVEL="INFO")
    responses = post_many(wd.url, [b"garbage", b"huge"] * 10, workers=8)
    assert [r.status_code for r in responses] == [400, 413] * 10
    assert requests.post(wd.url, data=b"huge", timeout=10).status_code == 413  # the last in the log by now
    log = wd.log()
    assert "handler failed" not in log and "Traceback" not in log, log[-3000:]


def test_requests_of_an_async_handle_cancelled_at_exec_timeout_are_logged_without_our_traceback(watchdogs, tmp_path):
    # handle(request) logged the cancellation of each request of the batch with a traceback through the watchdog's
    # own code (the coroutine's, then "not started" for each one after it): nothing a user could act on.
    folder = write_handler(str(tmp_path / "fn"), HANGING_ASYNC_HANDLER.format(entry="handle(requests)",
                                                                              cancelled=str(tmp_path / "c")))
    wd = watchdogs(folder, exec_timeout="1s", max_batch_size=4, batch_timeout="300ms")
    responses = post_many(wd.url, [b"hang", b"hang", b"hang"], workers=3)
    assert [r.status_code for r in responses] == [504] * 3
    wait_until(lambda: "handler failed" in wd.log(), 10, what="the cancelled requests logged")
    assert "Traceback" not in wd.log()
