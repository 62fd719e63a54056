"""observe: FunctionStatus lists (as the API answers them) and a real Redis into snapshots."""

from __future__ import annotations

import logging
import time

import pytest

from autoscaler.config import AutoscalerConfig
from autoscaler.loop import Autoscaler, redis_client
from autoscaler.observe import Observer
from autoscaler.snapshot import Node
from batcher import keys, stats
from helpers import http_stub, silent_listener, wait_until

NODES = (Node("n1", 4, 8 * 1024**3),)
SLO = {"com.faas-infer.latency_slo": "100ms"}


class Listing:
    """The OpenFaaS API's function list, as data (observe only reads it)."""

    def __init__(self, statuses: list[dict]) -> None:
        self.statuses = statuses

    def list_functions(self) -> list[dict]:
        return self.statuses


def variant(name: str, parent: str) -> dict:
    return {"name": name, "replicas": 1, "labels": {"com.faas-infer.parent": parent, "com.faas-infer.batch": "4",
                                                    "com.faas-infer.cpu": "0.5", "com.faas-infer.gpu": "0"}}


def test_variants_of_a_gone_or_unmanaged_parent_are_orphans(redis_client):
    listing = Listing([{"name": "f", "annotations": SLO}, {"name": "plain"}, variant("f-b4-c500-g0-0", "f"),
                       variant("gone-b4-c500-g0-0", "gone"), variant("plain-b4-c500-g0-0", "plain")])
    snap = Observer(AutoscalerConfig(orphan_grace=0), listing, redis_client, lambda: NODES).snapshot(0.0, time.time())
    assert [f.name for f in snap.functions] == ["f"]
    assert [v.name for v in snap.functions[0].variants if not v.pinned] == ["f-b4-c500-g0-0"]
    assert {(o.variant.name, o.parent, o.reason) for o in snap.orphans} == {
        ("gone-b4-c500-g0-0", "gone", "its parent gone is gone"),
        ("plain-b4-c500-g0-0", "plain", "its parent plain no longer carries the latency SLO annotation")}


def test_variants_of_a_parent_missing_from_the_list_are_orphans_only_once_it_stays_missing_orphan_grace(redis_client):
    # faasd updates a function by deleting it and creating it again: a tick in between must not delete its variants
    parent, child = {"name": "f", "annotations": SLO}, variant("f-b4-c500-g0-0", "f")
    listing = Listing([child])
    observer = Observer(AutoscalerConfig(orphan_grace=30), listing, redis_client, lambda: NODES)

    def seen(now: float) -> tuple[list[str], list[str]]:
        snap = observer.snapshot(now, time.time())
        return [o.variant.name for o in snap.orphans], [h.variant.name for h in snap.held]

    assert seen(0.0) == ([], ["f-b4-c500-g0-0"])  # held: it holds its resources, nothing is deleted
    assert seen(29.0) == ([], ["f-b4-c500-g0-0"])
    listing.statuses = [parent, child]  # created again: managed as before, the missing time forgotten
    assert seen(31.0) == ([], [])
    listing.statuses = [child]
    assert seen(40.0) == ([], ["f-b4-c500-g0-0"])
    assert seen(69.0) == ([], ["f-b4-c500-g0-0"])
    observer._last_traffic["f"] = 1.0  # its keep-warm memory lasts while its variants are held...
    assert seen(69.0) == ([], ["f-b4-c500-g0-0"]) and "f" in observer._last_traffic
    assert seen(70.0) == (["f-b4-c500-g0-0"], [])  # missing for orphan_grace since 40: deleted
    assert "f" not in observer._last_traffic  # ...and ends with them
    listing.statuses = [{"name": "f"}, child]  # listed without the SLO annotation: an orphan at once
    assert seen(71.0) == (["f-b4-c500-g0-0"], [])


def test_measured_times_of_gpu_instances_are_filed_under_their_share(redis_client):
    now = time.time()
    pipe = redis_client.pipeline()
    stats.record_heartbeat(pipe, "f", "a", now, {"cpu_limit": "1", "gpu_share": "0.5"}, {8: 0.002})
    pipe.execute()
    snap = Observer(AutoscalerConfig(), Listing([{"name": "f", "annotations": SLO}]), redis_client,
                    lambda: NODES).snapshot(0.0, now)
    assert [(m.batch, m.cpu, m.gpu) for m in snap.functions[0].measured] == [(8, 1.0, 0.5)]


@pytest.mark.parametrize("gpu_share", ["", "0"])
def test_a_parents_measured_times_are_filed_under_its_own_limits_or_dropped(redis_client, gpu_share):
    # Parents set no cpu_limit, so their heartbeats carry none; the GPU one is docker/kubernetes/gpu-stack.yml's
    # (its GPU profile and constraint, no GPU limit: faas-cli drops it). A parent states no gpu_share (""); a
    # watchdog from before gpu_share could be unset stated 0, and is read the same way.
    gpu_stack = {"limits": {"cpu": "2", "memory": "2Gi"}, "constraints": ["nvidia.com/gpu.present=true"],
                 "annotations": {**SLO, "com.openfaas.profile": "gpu"}}
    parents = {"cpu": {"limits": {"cpu": "2"}}, "whole-gpu": {"limits": {"cpu": "2", "nvidia.com/gpu": "1"}},
               "gpu-stack": gpu_stack, "unlimited": {}}
    now = time.time()
    pipe = redis_client.pipeline()
    for name in parents:
        stats.record_heartbeat(pipe, name, "a", now, {"cpu_limit": "", "gpu_share": gpu_share}, {8: 0.002})
    pipe.execute()
    listing = Listing([{"annotations": SLO, **spec, "name": name} for name, spec in parents.items()])
    stock = AutoscalerConfig(gpu_slices=1, gpu_steps=(1.0,))  # a device plugin advertising whole devices
    snap = Observer(stock, listing, redis_client, lambda: NODES).snapshot(0.0, now)
    filed = {f.name: [(m.batch, m.cpu, m.gpu) for m in f.measured] for f in snap.functions}
    # unlimited: as parse_parent counts the parent (what it requests, else one core), so its times and its
    # capacity describe one configuration
    assert filed == {"cpu": [(8, 2.0, 0.0)], "whole-gpu": [(8, 2.0, 1.0)], "gpu-stack": [],
                     "unlimited": [(8, 1.0, 0.0)]}
    assert [p.split(":")[0] for p in snap.problems] == ["measured times of gpu-stack (1 instance(s)) dropped"]
    assert "may run on a GPU" in snap.problems[0]
    assert [f.variants[0].cpu for f in snap.functions] == [2.0, 2.0, 2.0, 1.0]
    assert [f.variants[0].gpu for f in snap.functions] == [0.0, 1.0, 0.0, 0.0]  # the parents, pinned
    shared = Observer(AutoscalerConfig(gpu_slices=4), listing, redis_client, lambda: NODES).snapshot(0.0, now)
    assert [f.variants[0].gpu for f in shared.functions] == [0.0, 0.25, 0.0, 0.0]  # one unit of four per device


def test_a_redis_that_does_not_answer_costs_one_timeout_per_tick_not_one_per_function():
    with silent_listener() as port:
        client = redis_client(f"redis://127.0.0.1:{port}/0")
        listing = Listing([{"name": f"f{i}", "annotations": SLO} for i in range(6)])
        snap = Observer(AutoscalerConfig(), listing, client, lambda: NODES).snapshot(0.0, time.time())
        assert all(f.rate is None for f in snap.functions) and len(snap.problems) == 6
        assert sum("skipped" in p for p in snap.problems) == 5  # one read waited for, the others skipped


def test_a_snapshot_that_took_too_long_to_read_yields_no_decision(redis_client):
    def slow_nodes():
        time.sleep(0.3)
        return NODES
    scaler = Autoscaler(AutoscalerConfig(max_snapshot_age=0.1, metrics_port=0),
                        client=Listing([{"name": "f", "annotations": SLO}]), redis=redis_client,
                        predictor=None, nodes=slow_nodes)
    plan, todo = scaler.tick(1000.0, dry_run=True)
    assert not plan.valid and "old" in plan.reason and todo == []


def test_odd_entries_in_the_function_list_are_skipped_and_the_rest_planned(redis_client):
    bad_variant = variant("f-b4-c500-g0-9", "f")
    bad_variant["labels"]["com.faas-infer.batch"] = "x"
    bad_variant["limits"] = {"cpu": "500m"}
    listing = Listing([{"name": "f", "annotations": SLO, "labels": "not a map", "secrets": 5, "constraints": 7},
                       {"name": "g", "annotations": SLO, "labels": {"com.openfaas.scale.max": None}},
                       {"image": "no name"}, "text",
                       {"name": 7}, bad_variant, variant("f-b4-c500-g0-0", "f")])
    snap = Observer(AutoscalerConfig(), listing, redis_client, lambda: NODES).snapshot(0.0, time.time())
    assert [f.name for f in snap.functions] == ["f", "g"]
    assert [v.name for v in snap.functions[0].variants if not v.pinned] == ["f-b4-c500-g0-0"]
    assert snap.functions[0].spec["secrets"] == [] and snap.functions[1].max_instances is None
    assert snap.problems == ("function list: 3 entries without a name skipped",)
    orphan, = snap.orphans  # removed, its CPU counted until it is
    assert orphan.variant.name == "f-b4-c500-g0-9" and orphan.variant.cpu == 0.5
    assert orphan.reason == "a variant of f whose label com.faas-infer.batch='x' is not a number"


@pytest.mark.parametrize("odd", [{"envVars": {"max_batch_size": None}}, {"envVars": {"max_batch_size": [8]}},
                                 {"envVars": {"max_batch_size": "0"}}, {"limits": {"nvidia.com/gpu": "inf"}},
                                 {"limits": {"nvidia.com/gpu": "1e400"}},
                                 # json.loads reads the number 1e400 as infinity: int() of it is an OverflowError
                                 {"envVars": {"max_batch_size": 1e400}}, {"replicas": 1e400},
                                 {"availableReplicas": 1e400},
                                 # a memory quantity beyond a float: parse_memory's OverflowError
                                 {"limits": {"memory": "9" * 400}}, {"requests": {"memory": "9" * 400}}])
def test_a_parent_with_an_odd_batch_size_or_gpu_limit_costs_no_other_function_its_decision(redis_client, odd):
    # each of these failed the whole tick (TypeError, OverflowError): no function was planned while it was listed
    listing = Listing([{"name": "odd", "annotations": SLO, "replicas": 1, **odd},
                       {"name": "g", "annotations": SLO, "replicas": 1}])
    scaler = Autoscaler(AutoscalerConfig(keep_warm=0), client=listing, redis=redis_client, predictor=None,
                        nodes=lambda: NODES)
    plan, _ = scaler.tick(1000.0, dry_run=True)
    assert plan.valid and {f.name for f in plan.functions} == {"odd", "g"}, plan.reason
    parent = scaler.last_snapshot.functions[0].variants[0]
    assert parent.batch >= 1 and parent.gpu == 0.0


@pytest.mark.parametrize("raw, batch", [('"4"', 4), ('" 16 "', 16), ("4.5", 8), ("4.0", 8), ('"4.5"', 8), ("true", 8),
                                        ("null", 8), ("1e400", 8), ('"0"', 8)])
def test_a_parents_batch_size_is_read_as_the_watchdog_reads_it_and_any_it_refuses_as_the_default(redis_client, raw,
                                                                                              batch):
    # the watchdog reads max_batch_size as the whole number its text spells (int(str(v).strip())): int() of the
    # JSON number 4.5 (or true) took 4 (or 1) for a batch size the watchdog refuses, running its default 8
    from autoscaler.openfaas import OpenFaaSClient

    body = b'[{"name": "f", "annotations": {"com.faas-infer.latency_slo": "100ms"}, "replicas": 1, ' \
        b'"envVars": {"max_batch_size": %s}}]' % raw.encode()
    server = http_stub(lambda path: (200, body))
    try:
        client = OpenFaaSClient(f"http://127.0.0.1:{server.server_address[1]}")
        snap = Observer(AutoscalerConfig(), client, redis_client, lambda: NODES).snapshot(0.0, time.time())
    finally:
        server.shutdown()
    assert snap.functions[0].variants[0].batch == batch


def test_a_function_list_that_is_not_a_json_list_is_a_named_api_error():

    from autoscaler.openfaas import OpenFaaSClient, OpenFaaSError

    bodies = iter([b"<html>oops</html>", b'{"name": "f"}', b"null"])

    server = http_stub(lambda path: (200, next(bodies)))
    try:
        client = OpenFaaSClient(f"http://127.0.0.1:{server.server_address[1]}")
        for expected in ("not JSON: '<html>oops</html>'", "expected a JSON list, got dict"):
            try:
                client.list_functions()
            except OpenFaaSError as exc:
                assert expected in str(exc)
            else:
                raise AssertionError("no OpenFaaSError")
        assert client.list_functions() == []
    finally:
        server.shutdown()
        server.server_close()


def test_the_last_seconds_are_read_beside_the_rate_window(redis_client):
    now = time.time()
    pipe = redis_client.pipeline()
    stats.record_arrival(pipe, "f", now - 12, 100)  # inside the 20 s window, before the last 5 s
    stats.record_refused(pipe, "f", now - 12, 40)
    stats.record_arrival(pipe, "f", now - 1, 10)
    pipe.execute()
    snap = Observer(AutoscalerConfig(), Listing([{"name": "f", "annotations": SLO}]), redis_client,
                    lambda: NODES).snapshot(0.0, now)
    f, = snap.functions
    assert f.rate > f.recent_rate > 0 and f.refused_rate > 0 and f.recent_refused == 0


def test_an_unreadable_slo_or_scale_label_keeps_the_function_as_it_runs_and_says_why(redis_client):
    bad = [("0.2S", {}), ("abc", {}), ("-1s", {}), ("0", {}), ("100ms", {"com.openfaas.scale.min": "2.5"}),
           ("100ms", {"com.openfaas.scale.max": "-3"})]
    for slo, labels in bad:
        listing = Listing([{"name": "f", "annotations": {"com.faas-infer.latency_slo": slo}, "labels": labels},
                           variant("f-b4-c500-g0-0", "f")])
        snap = Observer(AutoscalerConfig(), listing, redis_client, lambda: NODES).snapshot(0.0, time.time())
        assert snap.orphans == (), slo  # its variants are not deleted
        fs, = snap.functions
        assert [v.name for v in fs.variants if not v.pinned] == ["f-b4-c500-g0-0"]
        assert fs.unreadable and any(fs.unreadable in p for p in snap.problems), (slo, labels)
        named = repr(slo) if not labels else repr(next(iter(labels.values())))
        assert named in fs.unreadable
    good = Listing([{"name": "f", "annotations": SLO, "labels": {"com.openfaas.scale.min": " 2 "}}])
    fs, = Observer(AutoscalerConfig(), good, redis_client, lambda: NODES).snapshot(0.0, time.time()).functions
    assert fs.unreadable == "" and fs.min_instances == 2 and fs.slo == 0.1


def test_a_functions_spec_problem_is_told_at_error_once_then_at_debug_while_it_lasts(redis_client, caplog):
    listing = Listing([{"name": "f", "annotations": {"com.faas-infer.latency_slo": "abc"}}])
    observer = Observer(AutoscalerConfig(), listing, redis_client, lambda: NODES)

    def errors(now: float) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="autoscaler.observe"):
            snap = observer.snapshot(now, time.time())
        # every tick still says why in the snapshot (and so the plan), whatever the log level
        assert bool(snap.functions[0].unreadable) == ("abc" in str(listing.statuses[0]))
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    first = errors(0.0)
    assert len(first) == 1 and first[0].startswith("function f: annotation com.faas-infer.latency_slo='abc' is not")
    assert errors(5.0) == errors(10.0) == []
    listing.statuses[0]["labels"] = {"com.openfaas.scale.max": "-3"}  # a second problem: the text changed
    assert len(errors(15.0)) == 1 and errors(20.0) == []
    listing.statuses[0] = {"name": "f", "annotations": SLO}  # fixed, then broken again: told again
    assert errors(25.0) == []
    listing.statuses[0] = {"name": "f", "annotations": {"com.faas-infer.latency_slo": "abc"}}
    assert len(errors(30.0)) == 1


def test_a_gpu_parent_that_sets_only_cpu_limit_is_filed_under_its_gpu_and_a_cpu_variant_under_its_cpu(
        redis_client, redis_server):
    """A user's GPU deployment that sets ``cpu_limit`` (torch's threads) and no ``gpu_share`` heartbeats through
    its real queue; its GPU times were filed as a 2-core CPU configuration, and decide then planned CPU
    variants at the GPU's speed. A CPU variant of it (the autoscaler's env, through the same config parsing)
    states gpu_share 0 and keeps its own configuration."""
    from autoscaler.candidates import Candidate
    from autoscaler.variants import variant_spec
    from batcher.redis_queue import RedisBatchQueue
    from watchdog.config import WatchdogConfig

    parent = {"name": "g", "annotations": SLO, "limits": {"cpu": "2", "nvidia.com/gpu": "1"},
              "envVars": {"cpu_limit": "2", "max_batch_size": "8"}}
    cpu_variant = variant_spec(parent, "g-b8-c1-g0-n1-0", "g", Candidate(8, 1.0, 0.0, 0.02, 400, 0, 0, 1.0, 2**30),
                               "n1", 0.1, False)
    queues = []
    try:
        for inst, env, seconds in (("p", parent["envVars"], 0.002), ("v", cpu_variant["envVars"], 0.02)):
            config = WatchdogConfig.from_env({**env, "batch_backend": "redis", "redis_url": redis_server.url,
                                              "function_name": "g", "instance_id": inst})
            queue = RedisBatchQueue.from_config(config)
            queue.watch_exec(lambda seconds=seconds: {8: seconds})
            queues.append(queue)
        wait_until(lambda: len(stats.read_function_stats(redis_client, "g", time.time()).instances) == 2
                   and all(i.exec_seconds for i in stats.read_function_stats(redis_client, "g", time.time()).instances),
                   5, what="both instances' heartbeats")
        stock = AutoscalerConfig(gpu_slices=1, gpu_steps=(1.0,))
        snap = Observer(stock, Listing([parent]), redis_client, lambda: NODES).snapshot(0.0, time.time())
    finally:
        for queue in queues:
            queue.leave()
    assert sorted((m.cpu, m.gpu, m.seconds) for m in snap.functions[0].measured) == [(1.0, 0.0, 0.02),
                                                                                       (2.0, 1.0, 0.002)]


def test_a_gpu_parent_that_states_its_gpu_share_is_one_configuration(redis_client, redis_server):
    """A GPU-profile deployment without a GPU limit (faas-cli drops it) is told to say how much with gpu_share
    (the dropped-times problem says so). Its times went under (2 cores, 1 GPU) while its own configuration
    stayed (2 cores, no GPU): decide priced the parent at the CPU's speed and left its GPU free on the node."""
    from batcher.redis_queue import RedisBatchQueue
    from watchdog.config import WatchdogConfig

    parent = {"name": "g", "annotations": {**SLO, "com.openfaas.profile": "gpu"}, "limits": {"cpu": "2"},
              "constraints": ["nvidia.com/gpu.present=true"], "envVars": {"gpu_share": "1", "max_batch_size": "8"}}
    config = WatchdogConfig.from_env({**parent["envVars"], "batch_backend": "redis", "redis_url": redis_server.url,
                                      "function_name": "g", "instance_id": "p"})
    queue = RedisBatchQueue.from_config(config)
    try:
        queue.watch_exec(lambda: {8: 0.002})
        wait_until(lambda: any(i.exec_seconds
                               for i in stats.read_function_stats(redis_client, "g", time.time()).instances),
                   5, what="the parent's heartbeat")
        stock = AutoscalerConfig(gpu_slices=1, gpu_steps=(1.0,))
        fs, = Observer(stock, Listing([parent]), redis_client, lambda: NODES).snapshot(0.0, time.time()).functions
    finally:
        queue.leave()
    own = next(v for v in fs.variants if v.pinned)
    assert [(m.cpu, m.gpu) for m in fs.measured] == [(own.cpu, own.gpu)] == [(2.0, 1.0)]


@pytest.mark.parametrize("heartbeat_timeout", [15.0, 0.5])
def test_a_function_none_of_whose_instances_beats_is_retired_and_one_with_a_live_instance_left_alone(
        redis_client, heartbeat_timeout):
    # Its last instance killed, then scaled to zero or deleted: no instance was left to reap it, and its instances,
    # their facts and claimed lists, its queue and its name in fi:functions stayed in Redis forever.
    now = time.time()
    pipe = redis_client.pipeline()
    stats.record_heartbeat(pipe, "gone", "a", now - 600, {"pid": "1"}, {8: 0.002})
    stats.record_arrival(pipe, "gone", now - 600)
    stats.record_heartbeat(pipe, "lately", "b", now - 60, {"pid": "4"}, {})  # within RETIRE_AFTER: left alone
    pipe.hincrby(keys.stats("gone"), "served", 3)
    pipe.lpush(keys.queue("gone"), b"q1", b"q2")
    pipe.lpush(keys.claimed("gone", "a"), b"c1")
    stats.record_heartbeat(pipe, "kept", "live", now - 1, {"pid": "2"}, {})  # live by the watchdogs' rule (3 s)
    stats.record_heartbeat(pipe, "kept", "dead", now - 60, {"pid": "3"}, {})  # left to its live peer to reap
    pipe.lpush(keys.queue("kept"), b"q")
    pipe.lpush(keys.claimed("kept", "dead"), b"c")
    pipe.execute()
    listing = Listing([{"name": "kept", "annotations": SLO}])
    Observer(AutoscalerConfig(heartbeat_timeout=heartbeat_timeout), listing, redis_client,
             lambda: NODES).snapshot(0.0, now)
    assert stats.list_functions(redis_client) == ["kept", "lately"]
    assert redis_client.exists(keys.instances("gone"), keys.queue("gone"), keys.claimed("gone", "a"),
                               keys.instance("gone", "a"), keys.exec_times("gone", "a")) == 0
    assert redis_client.hget(keys.stats("gone"), "dropped") == b"3"
    for key in (keys.stats("gone"), keys.arrivals("gone")):
        assert 0 < redis_client.ttl(key) <= stats.IDLE_TTL, key
    assert redis_client.zrange(keys.instances("kept"), 0, -1) == [b"dead", b"live"]
    assert redis_client.llen(keys.queue("kept")) == 1 and redis_client.llen(keys.claimed("kept", "dead")) == 1
    assert redis_client.ttl(keys.queue("kept")) == -1 and redis_client.exists(keys.instance("kept", "live"))


def trickling_api(pause: float, stall: bool = False, stall_after: float | None = None):
    """A loopback API whose function list comes one byte per ``pause`` seconds (with ``stall``, a few bytes and
    then nothing, the connection left open; with ``stall_after``, bytes for that many seconds and then nothing):
    a gateway slowed by its provider."""
    import http.server
    import threading

    body = b'[{"name": "f", "annotations": {"com.faas-infer.latency_slo": "100ms"}}]'

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            started = time.monotonic()
            for i, byte in enumerate(body):
                if (stall and i == 3) or (stall_after is not None and time.monotonic() - started > stall_after):
                    time.sleep(pause * len(body))
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(pause)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.mark.parametrize("stall", [False, True])
def test_an_api_that_trickles_or_stalls_its_answer_is_an_unreachable_api_within_the_timeout(redis_client, stall):
    # each byte came well within the socket's timeout, so the tick waited the whole trickle (here 14 s; for as long
    # as the gateway kept it up) with every function's decision held; now the call's timeout bounds the whole call
    from autoscaler.openfaas import OpenFaaSClient, OpenFaaSUnreachable

    server = trickling_api(0.2, stall)
    try:
        client = OpenFaaSClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=1.0)
        with pytest.raises(OpenFaaSUnreachable, match="GET /system/functions"):
            client.list_functions()
        scaler = Autoscaler(AutoscalerConfig(), client=client, redis=redis_client, predictor=None, nodes=lambda: NODES)
        plan, todo = scaler.tick(1000.0)
        assert not plan.valid and plan.reason.startswith("openfaas: GET /system/functions") and todo == []
    finally:
        server.shutdown()
        server.server_close()


def test_an_answer_that_stalls_just_before_the_deadline_ends_the_call_at_the_deadline_not_a_timeout_later():
    # the deadline was checked between reads only: a read begun just before it waited the socket's whole timeout,
    # so a call could take twice its timeout (here 3 s became 6 s); each read now waits only for what is left
    from autoscaler.openfaas import OpenFaaSClient, OpenFaaSUnreachable

    server = trickling_api(0.1, stall_after=2.8)
    try:
        client = OpenFaaSClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=3.0)
        started = time.monotonic()
        with pytest.raises(OpenFaaSUnreachable, match=r"GET /system/functions: no whole answer within 3s"):
            client.list_functions()
        assert time.monotonic() - started < 4.5  # 3 s and a margin for a loaded machine; it was 6 s
    finally:
        server.shutdown()
        server.server_close()
