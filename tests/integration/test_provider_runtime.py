"""The provider's runtime with real replicas: invoke, scale with load running, update, delete, crash and
restart, memory limit, CPU pinning, scale from zero, logs."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import uuid
from urllib.parse import unquote

import psutil
import pytest
import requests

from provider_fixtures import INSPECT, ProviderProcess
from helpers import wait_until, write_handler


@pytest.fixture
def provider(tmp_path):
    proc = ProviderProcess(str(tmp_path), {"cold_start_timeout": "30"}).start()
    yield proc
    assert proc.stop() == 0
    assert not [p for p in proc.descendants() if p.is_running()]


@pytest.fixture
def inspect_dir(tmp_path):
    return write_handler(str(tmp_path / "inspect"), INSPECT)


def invoke(url: str, name: str, body: bytes = b"", path: str = "", **kwargs) -> requests.Response:
    return requests.post(f"{url}/function/{name}{path}", data=body, timeout=60, **kwargs)


def test_deploy_invoke_passes_everything_through(provider, inspect_dir):
    response = provider.deploy("fn", inspect_dir, envVars={"GREETING": "hi"},
                               annotations={"com.faas-infer.latency_slo": "250ms"},
                               limits={"cpu": "1", "memory": "512Mi"})
    assert response.status_code == 202
    provider.wait_ready("fn", 1)
    chunks = iter([b"part-one ", b"part-two"])  # no Content-Length: sent chunked
    answer = requests.put(f"{provider.url}/function/fn.openfaas-fn/a/b%20c?x=1&x=2", data=chunks,
                          headers={"X-Test": "1", "Content-Type": "text/plain"}, timeout=30)
    assert answer.status_code == 200 and "X-Duration-Seconds" in answer.headers
    seen = answer.json()
    assert seen["method"] == "PUT" and seen["body"] == "part-one part-two"
    assert seen["path"] in ("/a/b c", "/a/b%20c") and seen["query"] == "x=1&x=2"
    assert seen["headers"]["X-Test"] == "1" and seen["headers"]["X-Forwarded-Host"]
    env = seen["env"]
    assert env == {"GREETING": "hi", "function_name": "fn", "latency_slo": "250ms", "cpu_limit": "1",
                   "memory_limit": str(512 * 1024**2), "OMP_NUM_THREADS": "1"}
    assert len(seen["affinity"]) == 1  # cpu limit 1: pinned to one core
    status = provider.status("fn")
    assert status["invocationCount"] == 1 and status["replicas"] == 1
    assert status["faasInfer"]["instances"][0]["cores"] == seen["affinity"]


def test_handler_files_open_as_in_the_template_image(provider, tmp_path):
    # The image runs the watchdog in /home/app with the handler in ./function; handlers rely on that layout.
    folder = write_handler(str(tmp_path / "files"), """
        def load():
            with open("function/labels.txt") as f:
                return f.read()

        def handle(request):
            return load()
    """)
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("cat,dog")
    assert provider.deploy("files", folder).status_code == 202
    provider.wait_ready("files", 1)
    answer = invoke(provider.url, "files")
    assert answer.status_code == 200 and answer.text == "cat,dog"


def test_invocations_carry_call_id_and_start_time(provider, inspect_dir):
    provider.deploy("fn", inspect_dir)
    provider.wait_ready("fn", 1)
    answer = invoke(provider.url, "fn", headers={"X-Call-Id": "abc-123"})
    seen = answer.json()["headers"]
    assert answer.headers["X-Call-Id"] == seen["X-Call-Id"] == "abc-123"
    assert answer.headers["X-Start-Time"] == seen["X-Start-Time"] and seen["X-Start-Time"].isdigit()
    fresh = invoke(provider.url, "fn")
    assert uuid.UUID(fresh.headers["X-Call-Id"]).version == 4
    assert fresh.json()["headers"]["X-Call-Id"] == fresh.headers["X-Call-Id"]
    assert int(fresh.headers["X-Start-Time"]) >= int(answer.headers["X-Start-Time"])
    missing = invoke(provider.url, "nope", headers={"X-Call-Id": "xyz"})
    assert missing.status_code == 503 and missing.headers["X-Call-Id"] == "xyz"
    assert missing.headers["X-Start-Time"].isdigit()
    # A gateway in front of us sets X-Start-Time: the function and the caller get the gateway's, not ours.
    kept = invoke(provider.url, "fn", headers={"X-Start-Time": "123", "X-Call-Id": "abc"})
    assert kept.headers["X-Start-Time"] == kept.json()["headers"]["X-Start-Time"] == "123"
    for bad in ("soon", "-1", "1" * 20, "9" * 19):  # 9...9 (19 digits) is past int64
        fresh = invoke(provider.url, "fn", headers={"X-Start-Time": bad})
        start = fresh.headers["X-Start-Time"]
        assert start == fresh.json()["headers"]["X-Start-Time"] and start.isdigit() and len(start) == 19, bad


def test_no_function_name_is_400_and_503_names_the_function_as_called(provider, inspect_dir):
    # faas-provider's proxy answers both, marked as its own (not the function's) with X-Openfaas-Internal.
    provider.deploy("fn", inspect_dir)
    provider.wait_ready("fn", 1)
    for path in ("/function/", "/function//sub"):  # no segment at all; ".ns" goes on to the 503, as there
        answer = requests.post(provider.url + path, data=b"x", timeout=10)
        assert answer.status_code == 400 and answer.text == "Provide function name in the request path", path
        assert answer.headers["X-Openfaas-Internal"] == "proxy" and answer.headers["X-Call-Id"], path
    dotted = requests.post(provider.url + "/function/.openfaas-fn", data=b"x", timeout=10)
    assert dotted.status_code == 503 and dotted.text == "No endpoints available for: .openfaas-fn."
    other = invoke(provider.url, "fn.staging")
    assert other.status_code == 503 and other.text == "No endpoints available for: fn.staging."
    assert other.headers["X-Openfaas-Internal"] == "proxy"
    assert invoke(provider.url, "nope").text == "No endpoints available for: nope."


def test_head_keeps_the_watchdogs_content_length(provider, tmp_path):
    fixed = write_handler(str(tmp_path / "fixed"), """
        from batcher import Response

        def handle(request):
            return Response(b"x" * 113, 200, {"Content-Type": "text/plain"})
    """)
    provider.deploy("fixed", fixed)
    replica = provider.wait_ready("fixed", 1)["faasInfer"]["instances"][0]
    direct = requests.head(f"http://127.0.0.1:{replica['port']}/x", timeout=10)
    assert direct.headers["Content-Length"] == "113"
    for _ in range(2):  # the connection stays usable after a HEAD that declared a length
        with requests.Session() as session:
            head = session.head(f"{provider.url}/function/fixed/x", timeout=10)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["Content-Length"] == "113"
            assert session.get(f"{provider.url}/function/fixed/x", timeout=10).content == b"x" * 113


def test_headers_named_with_underscores_are_dropped_not_mangled(provider, inspect_dir):
    # A deliberate deviation (README): under WSGI x_under and x-under are one name, a smuggling risk.
    provider.deploy("fn", inspect_dir)
    provider.wait_ready("fn", 1)
    answer = invoke(provider.url, "fn", headers={"x_under": "1", "X-Test": "1", "X_Call_Id": "smuggled"})
    seen = {k.lower() for k in answer.json()["headers"]}
    assert "x-test" in seen and not seen & {"x_under", "x-under", "x_call_id"}
    assert answer.headers["X-Call-Id"] != "smuggled"


def test_scale_0_2_1_under_load_loses_nothing(provider, inspect_dir):
    provider.deploy("fn", inspect_dir, envVars={"write_timeout": "10s"})
    provider.wait_ready("fn", 1)
    results: list[int] = []
    pids: set[int] = set()
    stop = threading.Event()

    def load():
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(f"{provider.url}/function/fn", data=b"sleep 0.05", timeout=60)
                    results.append(answer.status_code)
                    if answer.status_code == 200:
                        pids.add(answer.json()["pid"])
                except requests.RequestException as exc:
                    results.append(repr(exc))

    scale = lambda n: requests.post(f"{provider.url}/system/scale-function/fn", json={"replicas": n},  # noqa: E731
                                    timeout=5).status_code
    assert scale(0) == 202
    wait_until(lambda: provider.status("fn")["faasInfer"]["instances"] == [], 30, what="scale to zero")
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    assert scale(2) == 202
    provider.wait_ready("fn", 2)
    wait_until(lambda: len(results) > 40, 30, what="load to run")
    assert scale(1) == 202
    provider.wait_ready("fn", 1)
    count = len(results)
    wait_until(lambda: len(results) > count + 20, 30, what="load after scale down")
    stop.set()
    for t in threads:
        t.join(60)
    assert results and all(code == 200 for code in results), [r for r in results if r != 200][:5]
    assert len(pids) >= 2  # requests were spread over both replicas


def test_update_changes_environment_and_delete_stops_replicas(provider, inspect_dir):
    provider.deploy("fn", inspect_dir, envVars={"GREETING": "one"})
    provider.wait_ready("fn", 1)
    assert invoke(provider.url, "fn").json()["env"]["GREETING"] == "one"
    old_pid = provider.status("fn")["faasInfer"]["instances"][0]["pid"]
    assert provider.deploy("fn", inspect_dir, method="PUT", envVars={"GREETING": "two"}).status_code == 202
    wait_until(lambda: invoke(provider.url, "fn").json()["env"]["GREETING"] == "two", 30, what="update")
    provider.wait_ready("fn", 1)
    # The old replica is drained (SIGTERM) once the new one is ready: give it its drain time to exit.
    wait_until(lambda: not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE,
               30, what="old replica to exit after the update")
    pid = provider.status("fn")["faasInfer"]["instances"][0]["pid"]
    response = requests.delete(provider.url + "/system/functions", json={"functionName": "fn"}, timeout=5)
    assert response.status_code == 202
    assert requests.get(provider.url + "/system/function/fn", timeout=5).status_code == 404
    assert invoke(provider.url, "fn").status_code == 503
    wait_until(lambda: not psutil.pid_exists(pid), 30, what="replica to exit after delete")


def test_crashed_replica_is_restarted_and_reported(provider, inspect_dir):
    provider.deploy("fn", inspect_dir)
    first = provider.wait_ready("fn", 1)["faasInfer"]["instances"][0]
    os.killpg(first["pid"], signal.SIGKILL)
    wait_until(lambda: provider.status("fn")["faasInfer"].get("restarts") == 1, 30, what="crash noticed")
    status = provider.wait_ready("fn", 1)
    assert status["faasInfer"]["instances"][0]["instance"] != first["instance"]
    assert "exited with code -9" in status["faasInfer"]["lastExit"]
    assert invoke(provider.url, "fn").status_code == 200
    logs = requests.get(provider.url + "/system/logs", params={"name": "fn", "tail": "50"}, timeout=5).text
    events = [json.loads(line) for line in logs.splitlines()]
    assert any(e["instance"] == "provider" and "crashed" in e["text"] for e in events)


def test_a_crash_looping_function_answers_at_once_with_the_cause(provider, tmp_path):
    # cold_start_timeout is 30 s here: a caller must not wait it out for a handler that cannot load.
    broken = write_handler(str(tmp_path / "broken"), "def handle_batch(state, requests)\n    return []\n")
    provider.deploy("broken", broken)
    wait_until(lambda: provider.status("broken")["faasInfer"].get("restarts", 0) >= 2, 60, what="two crashes")
    started = time.monotonic()
    answer = invoke(provider.url, "broken")
    assert answer.status_code == 503 and time.monotonic() - started < 20
    assert answer.text.startswith("No endpoints available for: broken. Its replicas keep failing to start")
    assert "exited with code" in answer.text


def test_a_crash_looping_function_answers_with_the_error_its_load_raised(provider, tmp_path):
    """The caller of a function whose load() raises is told what it raised, not only "exited with code 3"
    (the traceback was only in `faas-infer logs`); secret-looking values in it are masked."""
    broken = write_handler(str(tmp_path / "loadfails"), """
        import os

        def load():
            raise RuntimeError("no weights at " + os.environ["WEIGHTS_URL"] + " with " + os.environ["API_TOKEN"])

        def handle_batch(state, requests):
            return []
    """)
    env = {"WEIGHTS_URL": "https://bot:hunter22@models.example/w.pt", "API_TOKEN": "tok-5ecret-5ecret"}
    provider.deploy("loadfails", broken, envVars=env)
    wait_until(lambda: provider.status("loadfails")["faasInfer"].get("restarts", 0) >= 2, 60, what="two crashes")
    answer = invoke(provider.url, "loadfails")
    assert answer.status_code == 503, answer.text
    assert "exited with code 3: RuntimeError: no weights at https://bot:***@models.example/w.pt with ***" \
        in answer.text, answer.text
    assert "hunter22" not in answer.text and "5ecret" not in answer.text
    assert "RuntimeError: no weights at" in provider.status("loadfails")["faasInfer"]["lastExit"]


def test_a_replica_that_cannot_be_started_is_a_failed_start_answered_with_its_cause(tmp_path, inspect_dir):
    """exec refusing the replica (here the python setting names no file) is a failed start, retried with
    backoff, and callers get 503 with the cause at once; it was raised out of the supervisor's tick, which
    stopped supervising every function after it, logged a traceback four times a second, and callers
    waited out cold_start_timeout for a 503 without a cause."""
    provider = ProviderProcess(str(tmp_path), {"cold_start_timeout": "30", "python": "/nonexistent/python"}).start()
    try:
        assert provider.deploy("fn", inspect_dir).status_code == 202
        wait_until(lambda: "/nonexistent/python" in provider.status("fn")["faasInfer"].get("lastExit", ""), 20,
                   what="the failed start reported")
        wait_until(lambda: invoke(provider.url, "fn").status_code == 503, 20, what="503 at once")
        started = time.monotonic()
        answer = invoke(provider.url, "fn")
        assert answer.status_code == 503 and time.monotonic() - started < 10
        assert "keep failing to start" in answer.text and "never started (FileNotFoundError" in answer.text
        logs = requests.get(provider.url + "/system/logs", params={"name": "fn"}, timeout=10).text
        assert "a replica could not be started: FileNotFoundError" in logs
    finally:
        assert provider.stop() == 0
    log = open(provider.log.name, errors="replace").read()
    assert "supervisor tick failed" not in log and "Traceback" not in log


def test_a_serving_function_that_crashed_twice_still_waits_for_its_restart(provider, inspect_dir):
    # Crashes of replicas that were serving are not a crash loop: the next caller waits for the restart.
    provider.deploy("fn", inspect_dir)
    for crashes in (1, 2):
        pid = provider.wait_ready("fn", 1)["faasInfer"]["instances"][0]["pid"]
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: provider.status("fn")["faasInfer"].get("restarts") == crashes, 30, what="crash noticed")
    assert invoke(provider.url, "fn").status_code == 200


def test_hung_replica_is_killed_and_replaced(tmp_path, inspect_dir):
    provider = ProviderProcess(str(tmp_path), {"liveness_timeout": "2"}).start()
    try:
        provider.deploy("fn", inspect_dir)
        first = provider.wait_ready("fn", 1)["faasInfer"]["instances"][0]
        os.killpg(first["pid"], signal.SIGSTOP)  # alive but answers nothing, like a deadlock
        wait_until(lambda: provider.status("fn")["faasInfer"].get("restarts") == 1, 60, what="hung replica killed")
        status = provider.wait_ready("fn", 1)
        assert status["faasInfer"]["instances"][0]["instance"] != first["instance"]
        last_exit = status["faasInfer"]["lastExit"]
        assert "health checks" in last_exit and first["instance"] in last_exit
        assert invoke(provider.url, "fn").status_code == 200
        wait_until(lambda: not psutil.pid_exists(first["pid"]), 10, what="hung replica to be gone")
    finally:
        try:
            os.killpg(first["pid"], signal.SIGCONT)
        except (ProcessLookupError, PermissionError, NameError):
            pass
        assert provider.stop() == 0


def test_a_replica_busy_in_a_long_call_is_not_killed_as_hung(tmp_path, inspect_dir):
    provider = ProviderProcess(str(tmp_path), {"liveness_timeout": "1"}).start()
    try:
        provider.deploy("fn", inspect_dir)
        provider.wait_ready("fn", 1)
        # holds the GIL for about 5 s (a 240-million-step sum; 20 s of it ran past the 30 s write_timeout on
        # a loaded host): its health checks fail, it turns unhealthy, and stays so well past liveness_timeout
        # (1 s), but a request is in flight within write_timeout: busy, not hung
        answer = requests.post(f"{provider.url}/function/fn", data=b"spin 6", timeout=120)
        assert answer.status_code == 200, answer.text
        assert not provider.status("fn")["faasInfer"].get("restarts")
    finally:
        assert provider.stop() == 0


def test_sighup_stops_the_provider_cleanly(tmp_path, inspect_dir):
    provider = ProviderProcess(str(tmp_path)).start()
    try:
        provider.deploy("fn", inspect_dir)
        replica = provider.wait_ready("fn", 1)["faasInfer"]["instances"][0]["pid"]
        provider.proc.send_signal(signal.SIGHUP)  # a reload would start a worker with no function
        assert provider.proc.wait(60) == 0
        wait_until(lambda: not psutil.pid_exists(replica) or psutil.Process(replica).status() == psutil.STATUS_ZOMBIE,
                   10, what="the replica to be stopped")
    finally:
        provider.stop()


def test_memory_limit_is_enforced(provider, inspect_dir):
    provider.deploy("fn", inspect_dir, limits={"memory": "200Mi"})
    first = provider.wait_ready("fn", 1)["faasInfer"]["instances"][0]
    answer = invoke(provider.url, "fn", b"grow")  # holds 300 MB: over the limit
    assert answer.status_code == 500 and "was stopped: OOMKilled" in answer.text
    status = provider.wait_ready("fn", 1)
    assert "OOMKilled" in status["faasInfer"]["lastExit"] and first["instance"] in status["faasInfer"]["lastExit"]
    assert status["faasInfer"]["instances"][0]["instance"] != first["instance"]
    assert invoke(provider.url, "fn").status_code == 200


def test_scale_from_zero_waits_for_a_cold_start_and_logs_follow(provider, inspect_dir):
    provider.deploy("fn", inspect_dir, labels={"com.openfaas.scale.min": "1"})
    provider.wait_ready("fn", 1)
    follow = requests.get(provider.url + "/system/logs", params={"name": "fn", "follow": "true", "tail": "0"},
                          stream=True, timeout=30)
    assert follow.status_code == 200
    requests.post(f"{provider.url}/system/scale-function/fn", json={"replicas": 0}, timeout=5)
    wait_until(lambda: provider.status("fn")["faasInfer"]["instances"] == [], 30, what="scale to zero")
    assert invoke(provider.url, "fn", b"hello").json()["body"] == "hello"
    assert provider.status("fn")["replicas"] == 1
    lines = follow.iter_lines(chunk_size=1)
    texts = []
    while not any("scale from zero" in t for t in texts):
        line = next(lines)
        if line:  # blank lines are the follow's heartbeat
            texts.append(json.loads(line)["text"])
    follow.close()
    missing = requests.get(provider.url + "/system/logs", params={"name": "nope"}, timeout=5)
    assert missing.status_code == 404


def test_a_dead_worker_stops_the_provider_and_its_replicas(tmp_path, inspect_dir):
    provider = ProviderProcess(str(tmp_path)).start()
    try:
        provider.deploy("fn", inspect_dir)
        replica = provider.wait_ready("fn", 1)["faasInfer"]["instances"][0]["pid"]
        (worker,) = psutil.Process(provider.proc.pid).children()
        worker.kill()
        assert provider.proc.wait(30) == 1  # not a fresh worker serving an empty runtime
        wait_until(lambda: not psutil.pid_exists(replica) or psutil.Process(replica).status() == psutil.STATUS_ZOMBIE,
                   10, what="the orphaned replica to be killed")
    finally:
        provider.stop()


def test_a_replica_stopped_from_outside_gets_no_requests_once_it_refuses_connections(tmp_path, inspect_dir):
    # A replica SIGTERMed or killed by someone else (an operator, the OOM killer) stops accepting before the
    # provider's health checks notice (here not for 30 s); with no request in flight it was always the least
    # busy replica, so every request tried it three times and got 503 while the other replica served.
    provider = ProviderProcess(str(tmp_path), {"health_interval": "30"}).start()
    try:
        provider.deploy("fn", inspect_dir, envVars={"healthcheck_interval": "0", "write_timeout": "20s"})
        provider.wait_ready("fn", 1)
        requests.post(f"{provider.url}/system/scale-function/fn", json={"replicas": 2}, timeout=5)
        leaving = provider.wait_ready("fn", 2)["faasInfer"]["instances"][0]
        # a call sent to it directly keeps it alive for a while after SIGTERM, with its port closed
        direct = threading.Thread(target=lambda: requests.post(f"http://127.0.0.1:{leaving['port']}/",
                                                               data=b"sleep 6", timeout=30))
        direct.start()
        time.sleep(0.5)
        os.killpg(leaving["pid"], signal.SIGTERM)

        def refused() -> bool:
            try:
                requests.get(f"http://127.0.0.1:{leaving['port']}/_/health", timeout=1)
            except requests.ConnectionError:
                return True
            return False
        wait_until(refused, 10, what="the SIGTERMed replica to stop accepting")
        codes: list[int] = []
        calls = [threading.Thread(target=lambda: codes.extend(invoke(provider.url, "fn", b"sleep 0.3").status_code
                                                             for _ in range(3))) for _ in range(6)]
        for t in calls:
            t.start()
        for t in calls:
            t.join(60)
        direct.join(30)
        assert codes == [200] * 18, codes
    finally:
        assert provider.stop() == 0


def test_a_body_over_max_request_bytes_gets_the_watchdogs_413_through_the_proxy(provider, inspect_dir):
    # The watchdog answers 413 from the Content-Length and closes the connection while the proxy is still
    # sending the body: the proxy must pass that answer on, not take the broken write for a failure.
    provider.deploy("small", inspect_dir, envVars={"max_request_bytes": "1024"})
    provider.wait_ready("small", 1)
    answer = invoke(provider.url, "small", b"x" * (8 * 1024 * 1024))
    assert answer.status_code == 413, answer.text
    assert "max_request_bytes=1024" in answer.text
    assert invoke(provider.url, "small", b"ok").status_code == 200  # nothing else was lost


def test_an_absolute_form_target_reaches_the_function_as_sent(provider, inspect_dir):
    # RFC 9112 3.2.2: a server accepts "POST http://host/path HTTP/1.1" (a client set to use the provider as
    # its proxy sends it). The sub-path goes on as sent, percent-encoding kept, and the watchdog decodes it
    # once for the function, as with "POST /path" ("/a%2520b" would show a second decoding or encoding).
    provider.deploy("fn", inspect_dir)
    provider.wait_ready("fn", 1)
    conn = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=30)
    try:
        for sub in ("/a%20b", "/caf%C3%A9", "/a%0Ab", "/a%2520b", "/plain"):
            conn.request("POST", f"{provider.url}/function/fn{sub}?x=1", body=b"hi")
            answer = conn.getresponse()
            text = answer.read().decode(errors="replace")
            assert answer.status == 200, (sub, text)
            seen = json.loads(text)
            assert (seen["path"], seen["query"], seen["body"]) == (unquote(sub), "x=1", "hi")
    finally:
        conn.close()
