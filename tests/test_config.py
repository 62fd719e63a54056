"""Watchdog configuration from the environment: OpenFaaS names, durations, errors naming key/value/rule."""

import pytest

from watchdog.config import ConfigError, WatchdogConfig
from watchdog.cpu import cgroup_cpu_quota, compute_threads


def test_defaults_follow_openfaas():
    c = WatchdogConfig.from_env({})
    assert (c.port, c.metrics_port, c.exec_timeout, c.write_timeout, c.max_inflight) == (8080, 8081, 30, 30, 0)
    assert c.healthcheck_interval == 30 and c.batch_backend == "local"


def test_healthcheck_interval_defaults_to_write_timeout_as_in_of_watchdog():
    assert WatchdogConfig.from_env({"write_timeout": "3s"}).healthcheck_interval == 3
    assert WatchdogConfig.from_env({"write_timeout": "3s", "healthcheck_interval": ""}).healthcheck_interval == 3
    assert WatchdogConfig.from_env({"write_timeout": "3s", "healthcheck_interval": "0"}).healthcheck_interval == 0


def test_durations_accept_units_and_bare_seconds():
    c = WatchdogConfig.from_env({"exec_timeout": "1m30s", "write_timeout": "2.5", "latency_slo": "250ms",
                                 "batch_timeout": "10ms", "TMPDIR": "/var/tmp"})
    assert c.exec_timeout == 90 and c.write_timeout == 2.5 and c.latency_slo == 0.25 and c.batch_timeout == 0.01
    assert c.tmp_dir == "/var/tmp"


@pytest.mark.parametrize("env, message", [
    ({"max_batch_size": "0"}, "max_batch_size=0: must be >= 1"),
    ({"exec_timeout": "soon"}, "exec_timeout='soon': not a duration"),
    ({"port": "http"}, "port='http': must be an integer"),
    ({"batch_backend": "kafka"}, "batch_backend=kafka: must be 'local' or 'redis'"),
    ({"batch_backend": "redis"}, "redis_url=: must be set when batch_backend=redis"),
    ({"suppress_lock": "maybe"}, "suppress_lock='maybe': must be true or false"),
    ({"latency_slo": "100ms", "batch_timeout": "200ms"}, "batch_timeout=0.2: must be below latency_slo=0.1"),
    ({"port": "9000", "metrics_port": "9000"}, "metrics_port=9000: must differ from port"),
    ({"cpu_limit": "lots"}, "cpu_limit='lots': not a CPU quantity"),
    ({"cpu_limit": "inf"}, "cpu_limit='inf': a CPU quantity must be a finite number >= 0"),
    ({"function_name": "a:b"}, "function_name=a:b: must be non-empty without ':', braces or whitespace"),
    ({"instance_id": "has space"}, "instance_id=has space: must be non-empty without"),
    ({"batch_backend": "redis", "redis_url": "notaurl"}, "redis_url=notaurl: must be a redis://"),
    # two functions deployed without it shared one queue (each answering the other's requests)
    ({"batch_backend": "redis", "redis_url": "redis://127.0.0.1:6390/0"},
     "function_name=: must be set when batch_backend=redis"),
])
def test_errors_name_key_value_and_rule(env, message):
    with pytest.raises(ConfigError) as err:
        WatchdogConfig.from_env(env)
    assert message in str(err.value)


def test_a_local_queue_needs_no_function_name():
    c = WatchdogConfig.from_env({})
    assert c.function_name == "" and c.name == "function"
    assert WatchdogConfig.from_env({"function_name": "mlp"}).name == "mlp"


def test_cpu_limit_sets_threads_within_the_machine():
    assert compute_threads(0.5, None, 16) == 1
    assert compute_threads(2.0, None, 16) == 2
    assert compute_threads(8.0, None, 2) == 2
    assert compute_threads(None, 1.5, 16) == 2
    assert compute_threads(None, None, 4) == 4


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(str(v1)) == 0.5


def test_exec_prior_points_parse_and_errors_name_the_format():
    assert WatchdogConfig.from_env({"exec_prior": "1:0.002, 8:0.006"}).exec_prior == ((1, 0.002), (8, 0.006))
    with pytest.raises(ConfigError, match="exec_prior='8=0.1': must be batch:seconds pairs"):
        WatchdogConfig.from_env({"exec_prior": "8=0.1"})


@pytest.mark.parametrize("env, message", [
    ({"function_dir": "/nonexistent/fn"}, "function_dir=/nonexistent/fn: no handler at /nonexistent/fn/handler.py"),
    ({"max_batch_size": "0"}, "max_batch_size=0: must be >= 1"),
])
def test_python_m_watchdog_exits_2_with_one_line_on_a_bad_setting(env, message, tmp_path):
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "watchdog"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": repo, "port": "1", "metrics_port": "2", **env})
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
