"""The handler in a child process: results as in-process, failures isolated, crashes and hangs survived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from batcher import BadInput, Request, Response
from batcher.dispatch import BatchAborted, run_isolated
from batcher.errors import DeadlineExceeded, HandlerFailed, Rejected
from helpers import REPO, wait_until, write_handler
from watchdog import handler_process
from watchdog.handler_process import HandlerProcess, HandlerProcessError

HANDLER = """
import os, signal, time
from batcher import BadInput, Response

def load():
    if os.environ.get("FAIL_LOAD"):
        raise RuntimeError("weights file missing")
    return {"pid": os.getpid()}

def handle_batch(state, requests):
    bodies = [r.body for r in requests]
    if b"slow" in bodies:
        time.sleep(0.6)
    if b"slowsegv" in bodies:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGSEGV)
    if b"segv" in bodies:
        os.kill(os.getpid(), signal.SIGSEGV)
    if b"hang" in bodies:
        time.sleep(60)
    if b"bad" in bodies:
        raise BadInput("body 'bad' is not acceptable")
    if b"boom" in bodies:
        raise RuntimeError("model exploded")
    if b"few" in bodies:
        return ["only one"]
    if b"dict" in bodies:
        return {"not": "a list"}
    out = []
    for r in requests:
        if r.body == b"json":
            out.append({"pid": state["pid"], "n": len(requests), "method": r.method, "path": r.path,
                        "query": r.query, "x": r.header("x-test"), "id": r.id})
        elif r.body == b"bytes":
            out.append(b"\\x00\\x01")
        elif r.body == b"own":
            out.append(Response(b"made", 201, {"X-Own": "1", "Content-Type": "text/x-own"}))
        elif r.body == b"mine":
            out.append(BadInput("only this one is bad"))
        elif r.body == b"nan":
            out.append(object())
        elif r.body == b"strbody":
            out.append(Response("a str, not bytes", 200, {}))
        else:
            out.append("echo " + r.body.decode())
    return out
"""


@pytest.fixture
def folder(tmp_path):
    return write_handler(str(tmp_path / "fn"), HANDLER)


@pytest.fixture
def child(folder):
    restarts: list[str] = []
    proc = HandlerProcess(folder, exec_timeout=2.0, on_restart=restarts.append).start()
    proc.restarts = restarts
    yield proc
    proc.close()


def req(body: bytes, **kw) -> Request:
    return Request(body=body, **kw)


def test_outputs_and_request_fields_cross_as_they_would_in_process(child):
    out = child.handle([req(b"json", method="PUT", path="/p", query="a=1", headers={"X-Test": "yes"}, id="abc"),
                        req(b"bytes"), req(b"own"), req(b"text")])
    first = json.loads(out[0].body)
    assert first == {"pid": child.pid, "n": 4, "method": "PUT", "path": "/p", "query": "a=1", "x": "yes", "id": "abc"}
    assert out[0].headers["Content-Type"] == "application/json"
    assert (out[1].body, out[1].headers["Content-Type"]) == (b"\x00\x01", "application/octet-stream")
    assert (out[2].status, out[2].body, out[2].headers["X-Own"]) == (201, b"made", "1")
    assert out[3].body == b"echo text"
    assert child.pid != os.getpid() and child.cold_start_seconds > 0


def test_errors_in_a_requests_place_and_unserialisable_outputs_fail_alone(child):
    out = child.handle([req(b"a"), req(b"mine"), req(b"nan"), req(b"strbody"), req(b"z")])
    assert isinstance(out[0], Response) and out[4].body == b"echo z"
    assert isinstance(out[1], BadInput) and "only this one is bad" in str(out[1])
    assert isinstance(out[2], HandlerFailed) and "not JSON-serialisable" in str(out[2])
    assert isinstance(out[3], HandlerFailed) and "cannot be sent: body is a str" in str(out[3])
    assert child.restarts == []


def test_a_raising_batch_is_bisected_so_only_bad_inputs_fail(child):
    results = run_isolated(child.handle, [req(b"a"), req(b"bad"), req(b"c"), req(b"boom"), req(b"e")])
    assert [type(r).__name__ for r in results] == ["Response", "BadInput", "Response", "HandlerFailed", "Response"]
    assert "body 'bad' is not acceptable" in str(results[1])
    assert "handler raised RuntimeError: model exploded" in str(results[3])
    assert child.restarts == []


def test_contract_breaches_fail_the_whole_batch_with_the_reason(child):
    few = run_isolated(child.handle, [req(b"few"), req(b"b"), req(b"c")])
    assert all(isinstance(r, HandlerFailed) for r in few) and "returned 1 responses for 3 requests" in str(few[0])
    not_list = run_isolated(child.handle, [req(b"dict"), req(b"b")])
    assert all("must return a list" in str(r) and "got dict" in str(r) for r in not_list)


def test_a_crash_costs_only_its_batch_and_a_new_child_serves_on(child):
    first = child.pid
    with pytest.raises(BatchAborted) as info:
        child.handle([req(b"segv"), req(b"x")])
    assert isinstance(info.value.error, HandlerFailed)
    assert "died of signal SIGSEGV running a batch of 2" in str(info.value)
    assert "a new one is being started" in str(info.value) and child.restarts == ["crash"]
    assert not child.ready()  # the HTTP loop must not run a batch itself while the new child loads
    assert child.handle([req(b"after")])[0].body == b"echo after"  # waits for the new child's load()
    assert child.pid != first and child.ready()
    # through the dispatcher the crashed batch is not bisected (each half would crash again)
    results = run_isolated(child.handle, [req(b"segv"), req(b"y"), req(b"z")])
    assert all(isinstance(r, HandlerFailed) for r in results) and child.restarts == ["crash", "crash"]


def test_a_child_that_died_idle_is_not_ready(child):
    """Replaced when the next batch is sent: that send must not happen on the HTTP loop (a slow load()
    there blocked it, and the inline guard ended the worker)."""
    import signal

    assert child.ready()
    os.kill(child.pid, signal.SIGKILL)
    wait_until(lambda: not child.ready(), 5, what="the dead child seen")
    assert child.handle([req(b"after")])[0].body == b"echo after" and child.ready()


def test_a_batch_past_exec_timeout_is_killed_and_answered_504(child):
    first = child.pid
    started = time.monotonic()
    with pytest.raises(BatchAborted) as info:
        child.handle([req(b"hang")])
    assert time.monotonic() - started < 30
    assert isinstance(info.value.error, DeadlineExceeded) and info.value.error.status == 504
    assert "ran past exec_timeout=2s" in str(info.value) and f"pid {first}" in str(info.value)
    assert child.restarts == ["timeout"]
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    assert child.handle([req(b"after")])[0].body == b"echo after"


def _in_thread(call):
    """Run ``call`` on a thread; the box gets its "out" or its "exc"."""
    box: dict = {}

    def run():
        try:
            box["out"] = call()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            box["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _two_in_flight(child, first, second):
    """Send ``first``, then ``second`` while the child runs it; both threads and their boxes."""
    a = _in_thread(lambda: child.handle(first))
    wait_until(lambda: len(child._sent) == 1, what="the first batch sent")
    b = _in_thread(lambda: child.handle(second))
    wait_until(lambda: len(child._sent) == 2, what="the second batch sent while the first runs")
    for thread, _ in (a, b):
        thread.join(30)
    return a[1], b[1]


def test_the_next_batch_is_sent_while_one_runs_and_each_gets_its_own_answer_and_time(child):
    first, second = _two_in_flight(child, [req(b"slow"), req(b"a")], [req(b"b")])
    assert [r.body for r in first["out"]] == [b"echo slow", b"echo a"] and second["out"][0].body == b"echo b"
    # the second waited in the child's socket for about 0.6 s; that wait is not its execution time
    assert first["out"].exec_seconds >= 0.6 and second["out"].exec_seconds < 0.3
    assert child.restarts == [] and not child._sent


def test_a_crash_fails_its_batch_only_and_the_batch_sent_behind_it_runs_on_the_new_child(child):
    first = child.pid
    crashed, behind = _two_in_flight(child, [req(b"slowsegv")], [req(b"b"), req(b"c")])
    assert isinstance(crashed["exc"], BatchAborted) and "died of signal SIGSEGV running a batch of 1" in str(crashed["exc"])
    assert [r.body for r in behind["out"]] == [b"echo b", b"echo c"]  # it never started in the dead child
    assert child.pid != first and child.restarts == ["crash"]


def test_a_hung_batch_is_killed_and_the_batch_sent_behind_it_runs_on_the_new_child(child):
    hung, behind = _two_in_flight(child, [req(b"hang")], [req(b"b")])
    assert isinstance(hung["exc"], BatchAborted) and hung["exc"].error.status == 504
    assert behind["out"][0].body == b"echo b" and child.restarts == ["timeout"]


def test_exec_timeout_counts_from_when_the_child_could_start_the_batch(folder):
    proc = HandlerProcess(folder, exec_timeout=1.0).start()
    try:
        # each runs 0.6 s: the second is answered 1.2 s after it was sent, yet 0.6 s after it could start
        first, second = _two_in_flight(proc, [req(b"slow")], [req(b"slow")])
        assert first["out"][0].body == second["out"][0].body == b"echo slow"
    finally:
        proc.close()


def test_closing_answers_the_batches_in_flight_first(folder):
    proc = HandlerProcess(folder).start()
    running = _in_thread(lambda: proc.handle([req(b"slow")]))
    wait_until(lambda: len(proc._sent) == 1)
    proc.close()
    running[0].join(10)
    assert running[1]["out"][0].body == b"echo slow" and proc.exit_code == 0


def test_answers_never_cross_batches_under_concurrent_callers_and_crashes(child):
    # Three callers for two slots, a crash now and then: every request gets its own answer or its own
    # batch's crash, never another batch's answer, and nothing hangs.
    def caller(k):
        got = []
        for i in range(12):
            bodies = [f"{k}-{i}-{j}".encode() for j in range(3)]
            if i % 5 == 4 and k == 0:
                bodies[1] = b"segv"
            try:
                got.append((bodies, [r.body for r in child.handle([req(b) for b in bodies])]))
            except BatchAborted as exc:
                got.append((bodies, exc))
        return got

    threads = [_in_thread(lambda k=k: caller(k)) for k in range(3)]
    for thread, _ in threads:
        thread.join(60)
    crashes = 0
    for thread, box in threads:
        assert not thread.is_alive() and "exc" not in box
        for bodies, answer in box["out"]:
            if isinstance(answer, BatchAborted):
                assert b"segv" in bodies and "SIGSEGV" in str(answer)
                crashes += 1
            else:
                assert answer == [b"echo " + b for b in bodies]
    assert crashes == 2 and child.restarts == ["crash", "crash"] and not child._sent


def test_an_exec_timeout_longer_than_poll_can_wait_is_kept_in_steps(folder):
    proc = HandlerProcess(folder, exec_timeout=10_000_000.0).start()  # ~116 days: past poll()'s int of ms
    try:
        assert proc.handle([req(b"x")])[0].body == b"echo x"
    finally:
        proc.close()


def test_an_unexpected_error_reading_an_answer_costs_that_batch_only(child, monkeypatch):
    real, calls = handler_process._recv_frame, []

    def broken_once(sock, deadline=None):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("no room for the answer")
        return real(sock, deadline)

    monkeypatch.setattr(handler_process, "_recv_frame", broken_once)
    with pytest.raises(BatchAborted, match=r"reading the handler process's answer .*\(MemoryError"):
        child.handle([req(b"a")])
    assert not child._sent  # nothing left waiting behind it: the next batch runs on a new child
    assert child.handle([req(b"b")])[0].body == b"echo b" and child.restarts == ["crash"]


def test_a_start_that_fails_outside_load_is_reported(folder, monkeypatch):
    def no_sockets(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(handler_process.socket, "socketpair", no_sockets)
    with pytest.raises(HandlerProcessError, match="cannot start the handler process: .*Too many open files"):
        HandlerProcess(folder).start()


def test_a_failing_load_is_reported_with_its_cause(folder, monkeypatch):
    monkeypatch.setenv("FAIL_LOAD", "1")
    with pytest.raises(HandlerProcessError, match="load failed: RuntimeError: weights file missing"):
        HandlerProcess(folder).start()


def test_a_missing_handler_names_the_path(tmp_path):
    with pytest.raises(HandlerProcessError, match="no handler at .*handler.py"):
        HandlerProcess(str(tmp_path)).start()


def test_the_child_ignores_sigint_and_sigterm_and_exits_when_closed(folder):
    proc = HandlerProcess(folder).start()
    pid = proc.pid
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    assert proc.handle([req(b"still")])[0].body == b"echo still"
    proc.close()
    assert proc.exit_code == 0  # it left at end of file, not killed after STOP_SECONDS
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(BatchAborted, match="stopped"):
        proc.handle([req(b"late")])


def test_a_child_that_died_between_batches_is_replaced_before_the_next_one(child):
    first = child.pid
    os.kill(first, signal.SIGKILL)
    os.waitid(os.P_PID, first, os.WEXITED | os.WNOWAIT)  # until it can be reaped (all its threads gone)
    assert child.handle([req(b"next")])[0].body == b"echo next"  # this batch never ran in the dead child
    assert child.pid != first and child.restarts == ["crash"]


def test_the_child_exits_when_the_watchdog_is_killed_mid_batch(folder, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from batcher import Request\n"
        "from watchdog.handler_process import HandlerProcess\n"
        f"p = HandlerProcess({folder!r}).start()\n"
        "print(p.pid, flush=True)\n"
        "p.handle([Request(body=b'hang')])\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": REPO})
    try:
        pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return _zombie(pid)

        wait_until(gone, 10, what="the orphaned handler process to exit")
    finally:
        parent.kill()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_a_child_that_cannot_be_started_again_is_retried_and_batches_meanwhile_get_503(folder, monkeypatch):
    monkeypatch.setattr(handler_process, "RETRY_FIRST_SECONDS", 0.2)
    restarts: list[str] = []
    proc = HandlerProcess(folder, on_restart=restarts.append).start()
    try:
        monkeypatch.setenv("FAIL_LOAD", "1")  # the next child inherits it: its load() raises
        with pytest.raises(BatchAborted, match="SIGSEGV"):
            proc.handle([req(b"segv")])
        with pytest.raises(BatchAborted) as refused:
            proc.handle([req(b"x")])
        assert isinstance(refused.value.error, Rejected) and refused.value.error.status == 503
        assert "not running: load failed: RuntimeError: weights file missing" in str(refused.value)
        assert not proc.ready()
        monkeypatch.delenv("FAIL_LOAD")  # the next attempt, in the background, succeeds
        wait_until(proc.ready, 20, what="a new child after load() works again")
        assert proc.handle([req(b"y")])[0].body == b"echo y"
        assert restarts == ["crash"]
    finally:
        proc.close()
