"""ops.scrape (text format, histogram arithmetic) and ops.top (frames from two readings, plain rendering,
the refresh loop with a fake clock)."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys

import pytest

from helpers import REPO, metrics_stub
from ops import scrape, top

FIXTURE = os.path.join(REPO, "tests", "fixtures", "openfaas", "gateway-metrics.txt")


def test_parse_the_real_gateway_exposition():
    samples = scrape.parse_text(open(FIXTURE).read())
    [ok] = scrape.select(samples, "gateway_function_invocation_total", function_name="py-echo.openfaas-fn")
    assert ok.value == 3 and ok.label("code") == "200"
    counts = scrape.buckets(samples, "gateway_functions_seconds", function_name="py-echo.openfaas-fn")
    assert counts[0.005] == 3 and counts[float("inf")] == 3
    assert scrape.parse_text('x{a="q\\"uo\\\\te",b="n\\nl"} 1.5e3\n#c\nbad line here\n') == (
        scrape.Sample("x", {"a": 'q"uo\\te', "b": "n\nl"}, 1500.0),)


def test_quantile_and_fraction_below_match_histogram_quantile():
    counts = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert scrape.quantile(0.5, counts) == pytest.approx(0.1)
    assert scrape.quantile(0.75, counts) == pytest.approx(0.15)
    assert scrape.fraction_below(0.15, counts) == pytest.approx(0.75)
    assert scrape.fraction_below(1.0, counts) == 1.0
    assert scrape.quantile(0.5, {}) is None and scrape.fraction_below(0.1, {0.1: 0.0, float("inf"): 0.0}) is None
    assert scrape.bucket_delta({0.1: 5.0}, {0.1: 8.0}) == {0.1: 5.0}  # counter reset


GATEWAY_BEFORE = """
gateway_function_invocation_total{code="200",function_name="mlp.openfaas-fn"} 100
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="0.05"} 90
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="0.1"} 100
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="+Inf"} 100
"""
GATEWAY_NOW = """
gateway_function_invocation_total{code="200",function_name="mlp.openfaas-fn"} 290
gateway_function_invocation_total{code="503",function_name="mlp.openfaas-fn"} 10
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="0.05"} 270
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="0.1"} 300
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="+Inf"} 300
gateway_service_count{function_name="mlp.openfaas-fn"} 1
"""
AUTOSCALER = """
faas_infer_autoscaler_slo_seconds{function_name="mlp.openfaas-fn"} 0.05
faas_infer_autoscaler_demand_rps{function_name="mlp.openfaas-fn"} 120
faas_infer_autoscaler_queue_depth{function_name="mlp.openfaas-fn"} 3
faas_infer_autoscaler_instances{function_name="mlp.openfaas-fn",config="b32-c1000-g0",kind="deployment"} 1
faas_infer_autoscaler_instances{function_name="mlp.openfaas-fn",config="b32-c1000-g0",kind="variant"} 2
faas_infer_autoscaler_instances{function_name="mlp.openfaas-fn",config="b8-c500-g0",kind="variant"} 2
faas_infer_autoscaler_allocated_cpu_cores{function_name="mlp.openfaas-fn"} 2
faas_infer_autoscaler_allocated_gpus{function_name="mlp.openfaas-fn"} 0
faas_infer_autoscaler_last_decision_info{function_name="mlp.openfaas-fn",action="scale_up",reason="demand 120/s"} 1
faas_infer_autoscaler_plan_info{solver="highs",status="optimal"} 1
faas_infer_autoscaler_decision_seconds_sum 0.5
faas_infer_autoscaler_decision_seconds_count 10
"""


def test_frame_from_two_readings():
    before = scrape.parse_text(GATEWAY_BEFORE)
    now = scrape.parse_text(GATEWAY_NOW + AUTOSCALER)
    frame = top.build_frame(now, before, 2.0)
    [row] = frame.rows
    assert row.function == "mlp.openfaas-fn"
    assert row.rps == pytest.approx(100.0)  # 200 more answers in 2 s
    assert row.error_ratio == pytest.approx(0.05)
    assert row.slo == 0.05 and row.attainment == pytest.approx(180 / 200)
    assert row.p50 == pytest.approx(0.05 * 100 / 180)
    assert row.instances == "b32-c1000-g0x3 b8-c500-g0x2"  # the deployment and its variants of a config
    assert row.demand == 120 and row.queue == 3 and row.replicas == 1 and row.cpu == 2
    assert frame.plan == "solver highs (optimal)" and frame.decision_seconds == pytest.approx(0.05)
    text = top.render(frame, "12:00:00")
    lines = text.splitlines()
    assert lines[0] == "faas-infer top  12:00:00" and lines[1].split()[:3] == ["FUNCTION", "RPS", "ERR"]
    assert lines[2].split()[:7] == ["mlp", "100.0", "5.0%", "28ms", "95ms", "50ms", "90.0%"]
    assert "  mlp: scale_up: demand 120/s" in text and "\x1b" not in text


def test_a_function_name_cannot_write_to_the_terminal():
    frame = top.build_frame(scrape.parse_text('gateway_service_count{function_name="a\\nb\x1b[2J.openfaas-fn"} 1\n'),
                            (), 1.0)
    text = top.render(frame)
    assert "\x1b" not in text and "a\\nb\\x1b[2J" in text


def test_frame_without_autoscaler_or_traffic():
    frame = top.build_frame(scrape.parse_text(GATEWAY_BEFORE), scrape.parse_text(GATEWAY_BEFORE), 1.0,
                            ("autoscaler http://x/metrics: ConnectionError",))
    [row] = frame.rows
    assert row.rps == 0 and row.p50 is None and row.slo is None and row.instances == ""
    text = top.render(frame)
    assert "! autoscaler http://x/metrics: ConnectionError" in text and " - " in text



# Half the interval's calls are fast 400s: within the SLO by time, but not answered.
HALF_400_BEFORE = """
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="0.05"} 10
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="+Inf"} 10
"""
HALF_400_NOW = """
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="0.05"} 60
gateway_functions_seconds_bucket{code="200",function_name="mlp.openfaas-fn",le="+Inf"} 60
gateway_functions_seconds_bucket{code="400",function_name="mlp.openfaas-fn",le="0.05"} 50
gateway_functions_seconds_bucket{code="400",function_name="mlp.openfaas-fn",le="+Inf"} 50
faas_infer_autoscaler_slo_seconds{function_name="mlp.openfaas-fn"} 0.1
"""


def test_within_slo_counts_only_answered_calls_as_the_autoscaler_does():
    from autoscaler.attainment import attainment_from

    before, now = scrape.parse_text(HALF_400_BEFORE), scrape.parse_text(HALF_400_NOW)
    [row] = top.build_frame(now, before, 1.0).rows
    # What the autoscaler's query gives for the same interval: increase per series, ok="1" on 2xx codes,
    # summed by (function_name, le, ok).
    vector: dict[tuple, float] = {}
    for s in scrape.select(now, "gateway_functions_seconds_bucket"):
        was = next((b.value for b in before if b.name == s.name and b.labels == s.labels), 0.0)
        key = (s.label("function_name"), s.label("le"), "1" if s.label("code").startswith("2") else "")
        vector[key] = vector.get(key, 0.0) + s.value - was
    results = [{"metric": {"function_name": fn, "le": le, **({"ok": ok} if ok else {})}, "value": [0, str(n)]}
               for (fn, le, ok), n in vector.items()]
    assert row.attainment == pytest.approx(0.5)
    assert attainment_from(results, {"mlp": 0.1}) == {"mlp": pytest.approx(row.attainment)}

class FakeReader:
    def __init__(self, readings):
        self.readings = list(readings)

    def read(self):
        return self.readings.pop(0), ()


def test_loop_prints_frames_over_the_interval():
    out = io.StringIO()
    clock = iter([0.0, 2.0, 4.0]).__next__
    reader = FakeReader([scrape.parse_text(GATEWAY_BEFORE), scrape.parse_text(GATEWAY_NOW + AUTOSCALER),
                         scrape.parse_text(GATEWAY_NOW + AUTOSCALER)])
    top.loop(reader, out, 2.0, 2, clear=False, sleep=lambda s: None, clock=clock)
    frames = out.getvalue().split("faas-infer top")
    assert len(frames) == 3 and "100.0" in frames[1] and " 0.0 " in frames[2]
    cleared = io.StringIO()
    top.loop(FakeReader([(), ()]), cleared, 1.0, 1, clear=True, sleep=lambda s: None,
             clock=iter([0.0, 1.0]).__next__)
    assert cleared.getvalue().startswith("\x1b[H\x1b[2J") and "(no functions yet)" in cleared.getvalue()



def test_reader_takes_the_gateway_metrics_from_metrics_url():
    """The OpenFaaS gateway serves its metrics on their own port (8082), not under its API URL."""
    api, metrics = metrics_stub(None), metrics_stub(open(FIXTURE, "rb").read())
    try:
        from faas_infer.cli import build_parser

        gateway = f"http://127.0.0.1:{api.server_address[1]}"
        argv = ["top", "--gateway", gateway, "--autoscaler", ""]
        url = f"http://127.0.0.1:{metrics.server_address[1]}/metrics"
        samples, problems = top.Reader(build_parser().parse_args(argv + ["--metrics-url", url])).read()
        # the stub lists no functions (404): every name is shown, and that is said
        assert problems == (f"functions {gateway}/system/functions: HTTPError (every name in the metrics shown)",)
        assert scrape.select(samples, "gateway_function_invocation_total", function_name="py-echo.openfaas-fn")
        _, problems = top.Reader(build_parser().parse_args(argv)).read()
        assert problems == (f"gateway {gateway}/metrics: HTTPError",)  # the default: <gateway>/metrics
        # the autoscaler's URL naming the gateway's metrics too: read once, not counted twice
        twice = ["top", "--gateway", gateway, "--metrics-url", url, "--autoscaler", url]
        again, _ = top.Reader(build_parser().parse_args(twice)).read()
        assert len(again) == len(samples)
    finally:
        api.shutdown()
        metrics.shutdown()

def test_run_rejects_a_bad_interval(capsys):
    args = argparse.Namespace(interval=0, once=True, clear=False, gateway="", metrics_url="", autoscaler="",
                              prometheus="")
    assert top.run(args) == 2
    assert "--interval=0" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["nan", "inf", "1e10"])
def test_the_command_refuses_an_interval_sleep_cannot_take_in_one_line(interval):
    # nan and inf went on to sleep() and ended in a ValueError or OverflowError traceback
    out = subprocess.run([sys.executable, "-m", "faas_infer.cli", "top", "--once", "--interval", interval,
                          "--gateway", "http://127.0.0.1:9", "--autoscaler", "http://127.0.0.1:9/metrics"],
                         env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"faas-infer top: --interval={float(interval)}: must be > 0 and at most 86400 seconds"], out.stderr


def test_top_is_a_faas_infer_command():
    from faas_infer.cli import build_parser

    args = build_parser().parse_args(["top", "--once", "--interval", "0.5"])
    assert args.once and args.interval == 0.5 and args._run is top.run


def test_only_listed_functions_are_kept():
    samples = scrape.parse_text(GATEWAY_NOW + 'gateway_service_count{function_name="nope.openfaas-fn"} 0\n'
                                'gateway_service_count{function_name="mlp"} 1\n' + AUTOSCALER)
    kept = top.deployed_only(samples, frozenset({"mlp.openfaas-fn"}))
    assert {s.label("function_name") for s in kept} == {"mlp.openfaas-fn", "mlp", ""}
    assert scrape.select(kept, "faas_infer_autoscaler_plan_info")  # series of no function stay
