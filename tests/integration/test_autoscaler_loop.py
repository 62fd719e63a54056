"""The autoscaler against the real local provider and a real Redis: variants appear under rising load, go
after the scale-down delay under falling load, and no request is lost meanwhile (synthetic control clock)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import requests

from autoscaler.config import AutoscalerConfig
from autoscaler.loop import Autoscaler
from autoscaler.metrics import AutoscalerMetrics, MetricsServer
from autoscaler.snapshot import Node
from helpers import write_handler
from provider_fixtures import ProviderProcess

HANDLER = """
    import time
    from batcher import Response

    def handle_batch(state, requests):
        time.sleep(0.004 + 0.001 * len(requests))
        return [Response(b"ok", 200, {}) for r in requests]
"""


class Predictor:
    """Matches the handler: 4 ms + 1 ms per item, whatever the CPU (it sleeps), so measurements agree."""

    def exec_seconds(self, model, batch, cpu, gpu):
        return None if gpu else 0.004 + 0.001 * batch


def variants(url: str) -> dict[str, int]:
    return {f["name"]: f.get("replicas", 0) for f in requests.get(url + "/system/functions", timeout=5).json()
            if (f.get("labels") or {}).get("com.faas-infer.parent") == "f"}


@pytest.mark.slow
def test_rising_then_falling_load(tmp_path, redis_server, redis_client):
    handler = write_handler(str(tmp_path / "f"), HANDLER)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    try:
        r = provider.deploy("f", handler, envVars={"max_batch_size": "1"}, limits={"cpu": "500m"},
                            annotations={"com.faas-infer.latency_slo": "200ms", "com.faas-infer.model": "f"})
        assert r.status_code in (200, 201, 202), r.text
        provider.wait_ready("f", 1)
        config = AutoscalerConfig(gateway_url=provider.url, redis_url=redis_server.url, scale_down_delay=20,
                                  rate_window=3, keep_warm=0, headroom=2.0, cpu_steps=(0.5,),
                                  batch_sizes=(1, 4, 16), max_replicas_per_variant=1,
                                  min_variant_age=0)  # the control clock is synthetic, createdAt is not
        scaler = Autoscaler(config, predictor=Predictor(), nodes=lambda: (Node("local", 8, 8 * 1024**3),))
        codes: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    codes.append(requests.post(provider.url + "/function/f", data=b"x", timeout=10).status_code)
                except requests.RequestException as exc:
                    codes.append(0)
                    errors.append(f"{time.monotonic():.2f} {exc}")

        workers = [threading.Thread(target=load) for _ in range(8)]
        for w in workers:
            w.start()
        now = 1000.0
        try:
            deadline = time.monotonic() + 40
            while not variants(provider.url) and time.monotonic() < deadline:
                time.sleep(1.5)
                now += 5
                scaler.tick(now)
            grown = variants(provider.url)
            assert grown, "no variant under load"
            time.sleep(2)  # the new instances take requests from the shared queue
        finally:
            stop.set()
            for w in workers:
                w.join()
        time.sleep(config.rate_window + 1)  # the arrival window empties
        scaler.tick(now + 5)
        assert variants(provider.url) == grown  # within the scale-down delay nothing is removed
        for step in range(1, 8):
            scaler.tick(now + 5 + 10 * step)  # past the delay: shed, max_step_down per tick
        assert not variants(provider.url)
        assert codes and all(c == 200 for c in codes), ({c: codes.count(c) for c in set(codes)}, errors[:3])
    finally:
        provider.stop()


def test_a_function_deleted_and_deployed_again_between_two_ticks_is_told_from_an_update(tmp_path, redis_server,
                                                                                         caplog):
    # the provider keeps createdAt across an update (PUT) and gives a new one to a new deployment: the first keeps
    # the function's guard memory, the second starts it afresh, and the operator is told once
    handler = write_handler(str(tmp_path / "f"), HANDLER)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    try:
        spec = {"annotations": {"com.faas-infer.latency_slo": "200ms", "com.faas-infer.model": "f"}}
        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        config = AutoscalerConfig(gateway_url=provider.url, redis_url=redis_server.url, scale_down_delay=20)
        scaler = Autoscaler(config, predictor=Predictor(), nodes=lambda: (Node("local", 8, 8 * 1024**3),))
        caplog.set_level(logging.INFO, logger="autoscaler.loop")
        first, _ = scaler.tick(1000.0)
        created = first.memory.deployed["f"]
        assert created and first.memory.redeployed_at == {}
        updated = provider.deploy("f", handler, method="PUT", envVars={"GREETING": "hi"}, **spec)
        assert updated.status_code in (200, 201, 202), updated.text
        after_update, _ = scaler.tick(1005.0)
        assert after_update.memory.deployed["f"] == created and after_update.memory.redeployed_at == {}
        gone = requests.delete(provider.url + "/system/functions", json={"functionName": "f"}, timeout=10)
        assert gone.status_code in (200, 202), gone.text
        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        anew, _ = scaler.tick(1010.0)
        assert anew.memory.deployed["f"] != created and set(anew.memory.redeployed_at) == {"f"}
        assert "deployed anew" in anew.function("f").reason
        scaler.tick(1015.0)
        told = [r for r in caplog.records if "deployed anew" in r.getMessage()]
        assert len(told) == 1 and told[0].getMessage().startswith("f was deployed anew")
        assert told[0].levelno == logging.INFO
    finally:
        provider.stop()


# The function's own deployment hangs in load() while HANG=1 (its variants state gpu_share: they never do).
HANGING_PARENT = """
    import os, time
    from batcher import Response

    def load():
        while os.environ.get("HANG") == "1" and not os.environ.get("gpu_share"):
            time.sleep(1)

    def handle_batch(state, requests):
        return [Response(b"ok", 200, {}) for r in requests]
"""

SLO = {"com.faas-infer.latency_slo": "200ms"}
QUICK = {"write_timeout": "2s"}  # a hanging load() is drained for write_timeout on stop


def stale_variant(provider: ProviderProcess, handler: str, redis_url: str,
                  min_variant_age: float) -> tuple[Autoscaler, AutoscalerMetrics, str]:
    """f (``HANGING_PARENT``) whose own deployment never gets ready and one ready variant (min_instances=2),
    then a new environment for f that makes the variant stale: (scaler, its metrics, the variant's name)."""
    assert provider.deploy("f", handler, envVars={"HANG": "1", **QUICK}, annotations=SLO).status_code in (200, 202)
    metrics = AutoscalerMetrics()
    config = AutoscalerConfig(gateway_url=provider.url, redis_url=redis_url, keep_warm=0, min_instances=2,
                              cpu_steps=(0.5,), batch_sizes=(1, 4), min_variant_age=min_variant_age)
    scaler = Autoscaler(config, predictor=Predictor(), nodes=lambda: (Node("local", 8, 8 * 1024**3),),
                        metrics=metrics)
    scaler.tick(1000.0)
    (name,) = variants(provider.url)
    provider.wait_ready(name, 1)
    assert provider.status("f").get("availableReplicas", 0) == 0
    new = provider.deploy("f", handler, method="PUT", envVars={"HANG": "1", "GREETING": "hi", **QUICK},
                          annotations=SLO)
    assert new.status_code in (200, 202), new.text
    return scaler, metrics, name



def test_an_instance_that_never_gets_ready_holds_a_rolling_update_the_operator_is_told_and_others_go_on(
        tmp_path, redis_server, caplog):
    # f's own deployment never gets ready; its variant (for min_instances=2) serves. A new
    # environment for f makes the variant stale, and the rolling update waits for f, for good: told once at
    # INFO and on /metrics, while g, deployed meanwhile, gets its variant in the same ticks
    handler = write_handler(str(tmp_path / "f"), HANGING_PARENT)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    try:
        scaler, metrics, name = stale_variant(provider, handler, redis_server.url, min_variant_age=0)
        assert provider.deploy("g", handler, envVars=QUICK, annotations=SLO).status_code in (200, 202)
        caplog.set_level(logging.INFO, logger="autoscaler.loop")
        _, first = scaler.tick(1005.0)
        _, second = scaler.tick(1010.0)
        assert not [c for c in first + second if c.fn == "f" and c.kind == "update"]
        assert [c.kind for c in first if c.fn == "g"] == ["deploy"]  # the other function's decision goes on
        told = [r for r in caplog.records if "rolling update of f" in r.getMessage()]
        assert len(told) == 1 and told[0].levelno == logging.INFO, [r.getMessage() for r in told]
        assert f"{name}: envVars GREETING changed" in told[0].getMessage() and "f (0/1 ready)" in told[0].getMessage()
        server = MetricsServer(metrics.registry, "127.0.0.1", 0).start()
        try:
            scrape = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        finally:
            server.stop()
        assert 'faas_infer_autoscaler_stale_variants{function_name="f.openfaas-fn",waiting="not_ready"} 1' in scrape
        assert variants(provider.url)[name] == 1  # the stale variant still serves
    finally:
        provider.stop()


def test_a_function_deleted_is_forgotten_and_one_deployed_again_is_told_and_counted_afresh(tmp_path, redis_server,
                                                                                           caplog):
    # the loop's small per-function maps outlived a deleted function: deployed again with the same reason to be
    # left as it runs, it was not told; deleted and deployed again between two ticks, the new instance was no
    # cold start (the old deployment's replicas were its baseline)
    handler = write_handler(str(tmp_path / "f"), HANDLER)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    try:
        # an unreadable scale label: left as it runs, for the same reason every tick
        spec = {"annotations": {"com.faas-infer.latency_slo": "200ms"}, "labels": {"com.openfaas.scale.min": "x"}}
        metrics = AutoscalerMetrics()
        config = AutoscalerConfig(gateway_url=provider.url, redis_url=redis_server.url)
        scaler = Autoscaler(config, predictor=Predictor(), nodes=lambda: (Node("local", 8, 8 * 1024**3),),
                            metrics=metrics)
        caplog.set_level(logging.INFO, logger="autoscaler.loop")

        def told() -> int:
            return len([r for r in caplog.records if r.getMessage().startswith("f left as it runs")])

        def cold_starts() -> str:
            return [line for line in metrics.registry.render().splitlines()
                    if line.startswith('faas_infer_autoscaler_cold_starts_total{function_name="f.openfaas-fn"}')][0]

        def delete() -> None:
            gone = requests.delete(provider.url + "/system/functions", json={"functionName": "f"}, timeout=10)
            assert gone.status_code in (200, 202), gone.text

        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        provider.wait_ready("f", 1)
        assert requests.post(provider.url + "/function/f", data=b"x", timeout=10).status_code == 200
        time.sleep(1.5)  # arrivals are counted by whole seconds past
        scaler.tick(1000.0)
        assert told() == 1 and set(scaler.observer._last_traffic) == {"f"}
        scaler.tick(1005.0)
        assert told() == 1  # the same reason is not told every tick
        delete()
        plan, _ = scaler.tick(1010.0)
        assert plan.valid and not plan.functions
        assert "f" not in scaler.observer._last_traffic and "f" not in metrics._running and "f" not in metrics._managed
        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        scaler.tick(1015.0)
        assert told() == 2  # deployed again: told again
        assert cold_starts().endswith(" 0")  # first seen: what runs is the baseline
        delete()
        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        scaler.tick(1020.0)
        assert cold_starts().endswith(" 1")  # deployed anew between two ticks: its instance was started
    finally:
        provider.stop()


def test_a_rolling_update_is_told_held_only_once_it_waits_min_variant_age_and_a_deleted_function_is_forgotten(
        tmp_path, redis_server, caplog):
    # a variant deployed or scaled up cold-starts for a tick or two, and the updates of its function's stale
    # variants wait for it: each such routine wait was told at INFO as a held update, and its end as "no longer
    # held". Now a wait is told once it has lasted min_variant_age (decide's own "still starting"); a function
    # deleted while held leaves no "no longer held" line and no stale_variants series
    handler = write_handler(str(tmp_path / "f"), HANGING_PARENT)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    try:
        scaler, metrics, name = stale_variant(provider, handler, redis_server.url, min_variant_age=30)
        caplog.set_level(logging.INFO, logger="autoscaler.loop")

        def held() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rolling update of f")]

        def stale() -> list[str]:
            return [line for line in metrics.registry.render().splitlines()
                    if line.startswith("faas_infer_autoscaler_stale_variants{")]

        scaler.tick(1005.0)
        scaler.tick(1020.0)
        assert held() == []  # held for 15 s: f may still be starting
        assert stale() == ['faas_infer_autoscaler_stale_variants{function_name="f.openfaas-fn",waiting="not_ready"} 1']
        scaler.tick(1036.0)
        scaler.tick(1040.0)
        assert len(held()) == 1 and held()[0].startswith("rolling update of f held: 1 variant(s)"), held()
        # a tick f is left as it runs (a scale label unreadable for a while) neither ends nor restarts the wait
        for labels, at in (({"com.openfaas.scale.min": "x"}, 1045.0), ({}, 1050.0)):
            again = provider.deploy("f", handler, method="PUT", envVars={"HANG": "1", "GREETING": "hi", **QUICK},
                                    annotations=SLO, labels=labels)
            assert again.status_code in (200, 202), again.text
            scaler.tick(at)
        assert len(held()) == 1, held()
        gone = requests.delete(provider.url + "/system/functions", json={"functionName": "f"}, timeout=10)
        assert gone.status_code in (200, 202), gone.text
        scaler.tick(1055.0)
        assert len(held()) == 1 and stale() == [], held()
    finally:
        provider.stop()


def test_a_function_deleted_and_created_again_ticks_later_keeps_its_held_variants_as_a_deployment_anew(
        tmp_path, redis_server):
    # faasd updates a function by deleting and creating it again: its variants are held while it is missing, and
    # the plan says so; back, it is deployed anew (nothing removed for scale_down_delay). Its guard memory was
    # forgotten while it was missing, so it came back as a function never seen and its variants went at once
    handler = write_handler(str(tmp_path / "f"), HANDLER)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    try:
        spec = {"annotations": {"com.faas-infer.latency_slo": "200ms", "com.faas-infer.model": "f"}}
        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        labels = {"com.faas-infer.parent": "f", "com.faas-infer.batch": "4", "com.faas-infer.cpu": "0.5",
                  "com.faas-infer.gpu": "0", "com.faas-infer.node": "local"}
        child = "f-b4-c500-g0-local-0"
        assert provider.deploy(child, handler, labels=labels, limits={"cpu": "500m"},
                               envVars={"max_batch_size": "4", "cpu_limit": "0.5", "gpu_share": "0"},
                               **spec).status_code in (200, 201, 202)
        config = AutoscalerConfig(gateway_url=provider.url, redis_url=redis_server.url, scale_down_delay=20,
                                  min_variant_age=0, keep_warm=0, cpu_steps=(0.5,), batch_sizes=(4,))
        scaler = Autoscaler(config, predictor=Predictor(), nodes=lambda: (Node("local", 8, 8 * 1024**3),))
        # a dry run keeps its guard memory between ticks and starts no loop-wide wait: no demand removes the variant
        first, todo = scaler.tick(1000.0, dry_run=True)
        assert [(c.kind, c.name) for c in todo] == [("delete", child)], first.reason
        gone = requests.delete(provider.url + "/system/functions", json={"functionName": "f"}, timeout=10)
        assert gone.status_code in (200, 202), gone.text
        missing, todo = scaler.tick(1005.0, dry_run=True)
        assert missing.valid and todo == [] and [h.variant.name for h in scaler.last_snapshot.held] == [child]
        assert "f: 1 variant(s) held as they run: its parent f is not listed" in missing.reason
        assert "orphan_grace=30s" in missing.reason
        assert provider.deploy("f", handler, **spec).status_code in (200, 201, 202)
        anew, todo = scaler.tick(1010.0, dry_run=True)
        assert set(anew.memory.redeployed_at) == {"f"} and "deployed anew" in anew.function("f").reason
        # kept while it watches the new deployment (updated to the new parent's spec, as any variant is)
        assert [c.kind for c in todo if c.name == child] == ["update"], [(c.kind, c.name) for c in todo]
    finally:
        provider.stop()
