"""Fixtures shared by the suite: a private Redis per session (flushed around each test) and process factories."""

from __future__ import annotations

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import RedisServer, WatchdogProcess, free_port  # noqa: E402


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server started for this test session on a free loopback port (never the shared 6379)."""
    server = RedisServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on the private Redis, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def watchdogs(tmp_path):
    """Factory: ``watchdogs(function_dir, **env)`` starts a real watchdog; all are stopped at the end."""
    started: list[WatchdogProcess] = []

    def start(function_dir: str, wait: bool = True, **env: str) -> WatchdogProcess:
        proc = WatchdogProcess(str(function_dir), {k: str(v) for k, v in env.items()})
        run_dir = tmp_path / f"wd{len(started)}"
        run_dir.mkdir()
        started.append(proc)
        return proc.start(str(run_dir), wait)

    yield start
    for proc in started:  # all drain at once: each takes healthcheck_interval and its exit
        proc.signal(signal.SIGTERM)
    for proc in started:
        proc.stop(10, signalled=True)
