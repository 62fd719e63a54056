"""``/system/logs`` against a real provider: a follow whose client has gone frees its thread, and the number
of follows open at once is capped (429 beyond it), so abandoned follows cannot hang the API; a deleted
function's log file is closed after ``log_retention``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
import requests

from provider_fixtures import INSPECT, ProviderProcess
from helpers import REPO, wait_until, write_handler

MAX_FOLLOWS = 4


@pytest.fixture
def provider(tmp_path):
    flags = {"threads": "8", "max_follows": str(MAX_FOLLOWS), "log_retention": "0.5"}
    proc = ProviderProcess(str(tmp_path), flags).start()
    proc.handler = write_handler(str(tmp_path / "inspect"), INSPECT)
    proc.deploy("quiet", proc.handler)
    proc.wait_ready("quiet", 1)
    yield proc
    assert proc.stop() == 0


def open_follow(port: int, timeout: float = 10) -> socket.socket:
    """A raw follow of the quiet function; returns once the answer's headers arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"GET /system/logs?name=quiet&follow=1&tail=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "connection closed before the headers"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
    except BaseException:
        sock.close()
        raise
    return sock


def test_abandoned_follows_free_their_threads(provider):
    for _ in range(3):  # rounds of max_follows clients that go away without reading to the end
        socks: list[socket.socket] = []
        # Every failed try abandons the follows it opened too, so tries are spaced beyond their release
        # (a second or two: the second blank line written to a closed client fails).
        wait_until(lambda: open_all(provider.port, socks), 30, interval=4,
                   what=f"{MAX_FOLLOWS} follow slots to be free again")
        for sock in socks:
            sock.close()
    assert requests.get(provider.url + "/system/functions", timeout=10).status_code == 200
    assert requests.post(provider.url + "/function/quiet", data=b"x", timeout=10).status_code == 200


def open_all(port: int, socks: list[socket.socket]) -> bool:
    """Open max_follows follows into ``socks``; on a 429 (or no thread free to answer yet: the abandoned
    follows of the round before may still hold theirs for a second or two) close them all and say False."""
    try:
        while len(socks) < MAX_FOLLOWS:
            socks.append(open_follow(port, timeout=3))
        return True
    except (AssertionError, OSError):
        for sock in socks:
            sock.close()
        socks.clear()
        return False


def test_follows_beyond_the_cap_get_429_and_idle_ones_get_heartbeats(provider):
    socks = [open_follow(provider.port) for _ in range(MAX_FOLLOWS)]
    try:
        over = requests.get(provider.url + "/system/logs", params={"name": "quiet", "follow": "1"}, timeout=10)
        assert over.status_code == 429 and f"max_follows={MAX_FOLLOWS}" in over.text
        # A quiet follow still gets a blank line now and then (chunk "1\r\n\n\r\n").
        socks[0].settimeout(10)
        assert b"\n" in socks[0].recv(4096)
        # Others still answer while every follow slot is taken.
        assert requests.get(provider.url + "/healthz", timeout=10).status_code == 200
        plain = requests.get(provider.url + "/system/logs", params={"name": "quiet", "tail": "5"}, timeout=10)
        assert plain.status_code == 200
    finally:
        for sock in socks:
            sock.close()


def open_logs(provider) -> list[str]:
    """Log files the provider's worker holds open."""
    (worker,) = psutil.Process(provider.proc.pid).children()
    return [f.path for f in worker.open_files() if "/logs/" in f.path]


def test_deleted_functions_close_their_log_files(provider):
    for i in range(4):  # as the autoscaler does with its variants
        assert provider.deploy(f"v-{i}", provider.handler).status_code == 202
        assert requests.delete(provider.url + "/system/functions", json={"functionName": f"v-{i}"},
                               timeout=10).status_code == 202
    wait_until(lambda: not [p for p in open_logs(provider) if "/v-" in p], 30, interval=0.5,
               what="the deleted functions' log files to be closed")
    assert [p for p in open_logs(provider) if p.endswith("/quiet.log")]
    missing = requests.get(provider.url + "/system/logs", params={"name": "v-0"}, timeout=10)
    assert missing.status_code == 404


def test_tail_zero_or_less_means_every_line(provider):
    """faas-provider: a tail of 0 or less is no limit (faas-cli logs sends tail=-1, others 0)."""
    def lines(tail: str) -> list[dict]:
        answer = requests.get(provider.url + "/system/logs", params={"name": "quiet", "tail": tail}, timeout=10)
        assert answer.status_code == 200
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]

    everything = lines("")
    assert len(everything) >= 2  # the provider's deploy and start events at least
    assert lines("0") == everything == lines("-1")
    assert lines("1") == everything[-1:]
    bad = requests.get(provider.url + "/system/logs", params={"name": "quiet", "tail": "x"}, timeout=10)
    assert bad.status_code == 400 and "tail='x': must be an integer" in bad.text


def logs_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "faas_infer.cli", "logs", *argv]


@pytest.mark.parametrize("argv, message", [
    # each was a traceback: FileNotFoundError, requests' MissingSchema
    (["quiet", "--secret-mount-path", "/nonexistent-secrets"],
     "--secret-mount-path /nonexistent-secrets: cannot read the credentials: [Errno 2] No such file or directory: "
     "'/nonexistent-secrets/basic-auth-user'"),
    (["quiet", "-g", "127.0.0.1:1"], "--gateway 127.0.0.1:1: "),
])
def test_faas_infer_logs_refuses_bad_flags_in_one_line(argv, message):
    out = subprocess.run(logs_command(*argv), env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(message), out.stderr


def test_faas_infer_logs_says_so_in_one_line_when_the_provider_goes_away(tmp_path):
    """A provider stopped under `faas-infer logs -f` ended it in a ChunkedEncodingError traceback."""
    provider = ProviderProcess(str(tmp_path), {}).start()
    try:
        provider.deploy("quiet", write_handler(str(tmp_path / "inspect"), INSPECT))
        provider.wait_ready("quiet", 1)
        follow = subprocess.Popen(logs_command("quiet", "-g", provider.url, "-f"),
                                  env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert follow.stdout.readline()  # the replica's start-up lines: the follow is open
        replicas = provider.descendants()  # orphaned by the kill: stopped below, or they outlive the test
        os.killpg(provider.proc.pid, signal.SIGKILL)
        _, err = follow.communicate(timeout=30)
    finally:
        provider.stop()
        for replica in locals().get("replicas", ()):
            try:
                os.killpg(replica.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    assert follow.returncode == 1 and err.splitlines() == [
        f"the provider at {provider.url} closed the log stream: ChunkedEncodingError"], err
