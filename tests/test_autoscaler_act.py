"""act: which API calls a plan needs, in which order, with which variant specs; sending them to real HTTP peers."""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time

from autoscaler.act import Change, HeldUpdate, apply, changes, rollout
from autoscaler.config import AutoscalerConfig
from autoscaler.decide import decide
from autoscaler.openfaas import OpenFaaSClient
from autoscaler.snapshot import Node, Orphan, Variant
from autoscaler.variants import parse_variant, shards, variant_name
from autoscaler_fakes import GiB, LinearPredictor, fn, snapshot
from helpers import silent_listener

PARENT = {"name": "f", "image": "img:1", "envProcess": "python index.py",
          "envVars": {"A": "1", "max_batch_size": "8", "batch_timeout": "20ms"},
          "labels": {"com.openfaas.scale.min": "1", "team": "x"}, "annotations": {"com.faas-infer.latency_slo": "100ms"},
          "limits": {"memory": "256Mi", "cpu": "1"}}


def plan_for(state, nodes=(Node("n1", 8, 16 * GiB),), **kw):
    cfg = AutoscalerConfig(max_step_up=100, max_step_down=100, **kw)
    snap = snapshot([state], nodes)
    return decide(snap, LinearPredictor(), cfg, 0.0), snap, cfg


def test_new_instances_are_deployed_as_linked_variants():
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT))
    todo = changes(plan, snap, cfg)
    assert todo and all(c.kind == "deploy" for c in todo)
    spec = todo[0].spec
    assert spec["image"] == "img:1" and spec["envProcess"] == "python index.py"
    assert spec["labels"]["com.faas-infer.parent"] == "f" and "com.openfaas.scale.min" not in spec["labels"]
    assert spec["envVars"]["function_name"] == "f" and spec["envVars"]["A"] == "1"
    # The watchdog derives the wait from the SLO and the load: the parent's timeout is for its batch size
    assert "batch_timeout" not in spec["envVars"] and float(spec["envVars"]["latency_slo"]) == 0.1
    assert spec["envVars"]["exec_prior"].startswith(f"{spec['envVars']['max_batch_size']}:")
    assert spec["limits"]["cpu"].endswith("m") and spec["constraints"] == []  # one node: no constraint
    status = {"name": spec["service"], "labels": spec["labels"], "limits": spec["limits"], "replicas": 1}
    v = parse_variant(status, 1)
    assert v is not None and v.node == "n1" and v.memory == 256 * 1024**2


def test_only_differences_are_sent_and_capacity_comes_first():
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT))
    keep = tuple(Variant(variant_name("f", t.key, t.node, 0), t.candidate.batch, t.candidate.cpu, 0.0,
                         t.candidate.memory, t.node, t.count, ready=t.count) for t in plan.function("f").targets)
    stale = Variant("f-b64-c4000-g0-n1-0", 64, 4.0, 0.0, 256 * 1024**2, "n1", 1, ready=1)
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT, variants=(*keep, stale)))
    todo = changes(plan, snap, cfg)
    assert [c.kind for c in todo] == sorted((c.kind for c in todo), key=["deploy", "update", "scale-up",
                                                                        "scale-down", "delete"].index)
    assert ("delete", stale.name) in [(c.kind, c.name) for c in todo]
    assert not {v.name for v in keep} & {c.name for c in todo if c.kind == "deploy"}


def test_nodes_sharing_a_long_prefix_get_a_variant_each_and_names_fit_a_dns_label():
    pool = "gke-prod-default-pool-1a2b3c4d-"
    nodes = (Node(pool + "abcd", 1, 16 * GiB), Node(pool + "wxyz", 1, 16 * GiB))
    plan, snap, cfg = plan_for(fn("f", 300.0, spec=PARENT), nodes, batch_sizes=(1,), cpu_steps=(1.0,))
    deploys = [c for c in changes(plan, snap, cfg) if c.kind == "deploy"]
    assert sorted(c.spec["labels"]["com.faas-infer.node"] for c in deploys) == [n.name for n in nodes]
    assert len({c.name for c in deploys}) == 2
    long = variant_name("image-classification-resnet50-production", "b64-c4000-g100", "ip-10-0-1-2.ec2.internal", 12)
    assert len(long) <= 63 and long.endswith("-12") and long == variant_name(
        "image-classification-resnet50-production", "b64-c4000-g100", "ip-10-0-1-2.ec2.internal", 12)
    assert variant_name("resnet", "b4-c500-g0", "host1", 0) == "resnet-b4-c500-g0-host1-0"  # as before


def test_groups_split_into_shards_on_platforms_with_few_replicas():
    assert shards(7, 5) == [5, 2] and shards(3, 1) == [1, 1, 1]
    plan, snap, cfg = plan_for(fn("f", 3000.0, spec=PARENT), batch_sizes=(1,), cpu_steps=(1.0,),
                               max_replicas_per_variant=5)
    todo = changes(plan, snap, cfg)
    assert sum(c.replicas for c in todo) == plan.function("f").instances()
    assert all(c.replicas <= 5 for c in todo)


def test_node_constraints_on_clusters_and_nothing_for_invalid_plans():
    nodes = (Node("n1", 1, 16 * GiB), Node("n2", 1, 16 * GiB))
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT), nodes=nodes)
    # faas-netes reads key=value only ("kubernetes.io/hostname == n1" was dropped: nothing was pinned)
    pinned = [x for c in changes(plan, snap, cfg) for x in c.spec["constraints"] if "hostname" in x]
    assert pinned and set(pinned) <= {"kubernetes.io/hostname=n1", "kubernetes.io/hostname=n2"}
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT), nodes=())
    assert changes(plan, snap, cfg) == []


def running_as_planned(parent=PARENT, created_ago: float = 3600.0, **kw):
    """The plan for ``parent`` carried out: its variants running with the specs act deployed, as the API
    lists them (``created_ago`` seconds old)."""
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=parent), **kw)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - created_ago))
    running = []
    for c in changes(plan, snap, cfg):
        status = {**c.spec, "name": c.name, "replicas": c.replicas, "availableReplicas": c.replicas,
                  "createdAt": created}
        running.append(parse_variant(status, 256 * 1024**2))
    return tuple(running)


def test_variants_follow_their_parents_image_environment_and_slo():
    running = running_as_planned()
    assert running and all(v is not None for v in running)
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT, variants=running))
    assert changes(plan, snap, cfg) == []  # as deployed: nothing to do
    for parent, what in (({**PARENT, "image": "img:2"}, "image"),
                         ({**PARENT, "envVars": {**PARENT["envVars"], "A": "2"}}, "envVars A"),
                         ({**PARENT, "annotations": {**PARENT["annotations"], "x": "y"}}, "annotations x")):
        ticks = roll_out(lambda variants: plan_for(fn("f", 500.0, spec=parent, variants=variants)), running)
        assert [len(t) for t in ticks] == [1] * len(running)  # one variant at a time
        assert len({c.name for t in ticks for c in t}) == len(running)
        assert all(what in c.reason and c.spec["image"] == parent["image"] for t in ticks for c in t)
    plan, snap, cfg = plan_for(fn("f", 500.0, slo=0.08, spec=PARENT, variants=running))
    assert any(c.kind == "update" and "latency_slo" in c.reason for c in changes(plan, snap, cfg))


def roll_out(plan_with, running):
    """Ticks of ``plan_with(variants) -> (plan, snapshot, config)`` until nothing is left to update, each
    update carried out as the API would (the variant then runs its new spec, ready); the updates per tick."""
    ticks, running = [], tuple(running)
    for _ in range(2 * len(running) + 2):
        updates = [c for c in changes(*plan_with(running)) if c.kind == "update"]
        if not updates:
            return ticks
        ticks.append(updates)
        done = {c.name: c for c in updates}
        running = tuple(parse_variant({**done[v.name].spec, "name": v.name, "replicas": v.replicas,
                                       "availableReplicas": v.replicas}, 256 * 1024**2)
                        if v.name in done else v for v in running)
    raise AssertionError(f"the update never ended: {ticks}")


def test_a_rolling_update_waits_for_the_variant_restarting_and_updates_one_serving_nothing_at_once():
    running = running_as_planned(batch_sizes=(1,), cpu_steps=(1.0,))
    assert len(running) >= 3
    new = {**PARENT, "image": "img:2"}
    starting = (dataclasses.replace(running[0], ready=0), *running[1:])  # restarting (updated, crashed...)
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=new, variants=starting), batch_sizes=(1,), cpu_steps=(1.0,))
    assert [c.name for c in changes(plan, snap, cfg) if c.kind == "update"] == [running[0].name]
    fresh = (dataclasses.replace(running[0], status={**running[0].status, "image": "img:2"}, ready=0), *running[1:])
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=new, variants=fresh), batch_sizes=(1,), cpu_steps=(1.0,))
    assert not [c for c in changes(plan, snap, cfg) if c.kind == "update"]  # the others wait for it


def test_updates_the_rolling_update_holds_are_named_with_the_instances_they_wait_for():
    running = running_as_planned(batch_sizes=(1,), cpu_steps=(1.0,))
    new = {**PARENT, "image": "img:2"}
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=new, variants=running), batch_sizes=(1,), cpu_steps=(1.0,))
    todo, held = rollout(plan, snap, cfg)
    assert [c.name for c in todo if c.kind == "update"] == [running[0].name]
    assert held == tuple(HeldUpdate("f", v.name, "image") for v in running[1:])  # their turn comes
    fresh = (dataclasses.replace(running[0], status={**running[0].status, "image": "img:2"}, ready=0), *running[1:])
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=new, variants=fresh), batch_sizes=(1,), cpu_steps=(1.0,))
    todo, held = rollout(plan, snap, cfg)
    assert not [c for c in todo if c.kind == "update"]
    assert {h.name for h in held} == {v.name for v in running[1:]}
    assert all(h.waiting_for == (f"{running[0].name} (0/1 ready)",) for h in held)


def test_a_new_execution_time_prior_alone_restarts_nothing():
    running = running_as_planned()
    moved = tuple(dataclasses.replace(v, status={**v.status, "envVars": {**v.status["envVars"], "exec_prior": "1:9"}})
                  for v in running)
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT, variants=moved))
    assert changes(plan, snap, cfg) == []


def test_a_young_variant_is_kept_until_min_variant_age_and_orphans_go_at_once():
    def changes_at(variants, orphans=()):
        cfg = AutoscalerConfig(max_step_up=100, max_step_down=100, keep_warm=0)
        snap = dataclasses.replace(snapshot([fn("f", 0.0, spec=PARENT, variants=variants)], (Node("n1", 8, 16 * GiB),)),
                                   taken_epoch=time.time(), orphans=orphans)
        plan = decide(snap, LinearPredictor(), cfg, 0.0)  # no demand: nothing wanted
        return plan, changes(plan, snap, cfg)

    young = running_as_planned(created_ago=5.0)
    plan, todo = changes_at(young)
    assert todo == [] and plan.function("f").instances() == len(young)  # kept, and counted as running
    assert {c.kind for c in changes_at(running_as_planned(created_ago=60.0))[1]} == {"delete"}
    orphan = Orphan(dataclasses.replace(young[0], name="gone-b1-c500-g0-n1-0"), "gone", "its parent gone is gone")
    assert [(c.kind, c.name, c.fn, c.reason) for c in changes_at(young, (orphan,))[1]] == [
        ("delete", orphan.variant.name, "gone", "its parent gone is gone")]  # young as it is, not kept


DEPLOYS = [Change("deploy", "f", f"f-b1-c1000-g0-{i}", 1, {"service": f"f-b1-c1000-g0-{i}"}) for i in range(3)]


def test_after_a_call_the_api_does_not_answer_the_rest_wait_for_the_next_tick():
    with silent_listener() as port:
        results = apply(DEPLOYS, OpenFaaSClient(f"http://127.0.0.1:{port}", timeout=0.2))
    first = results[0][1]
    assert "timed out" in first
    assert [outcome for _, outcome in results[1:]] == [f"skipped ({first})"] * 2


def test_a_call_the_api_refuses_costs_only_itself():
    seen = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            self.send_response(500 if len(seen) == 1 else 202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        results = apply(DEPLOYS, OpenFaaSClient(f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 3 and results[0][1].startswith("POST /system/functions: 500")
    assert [outcome for _, outcome in results[1:]] == ["ok", "ok"]


def test_a_gpu_share_asks_kubernetes_for_its_units_of_a_sliced_device():
    """Four 0.25 variants on one device asked for nvidia.com/gpu "1" each: four devices, where the device
    plugin (sharing replicas = gpu_slices) has four units per device."""
    from autoscaler.candidates import Candidate
    from autoscaler.variants import variant_spec

    quarter = Candidate(64, 0.5, 0.25, 0.02, 3000, 0, 0, 0.3, 2**30)
    half = dataclasses.replace(quarter, gpu=0.5, key="")
    parent = {"name": "f", "image": "img", "limits": {"cpu": "1"}}
    assert variant_spec(parent, "v", "f", quarter, "n1", 0.1, True, 4)["limits"]["nvidia.com/gpu"] == "1"
    assert variant_spec(parent, "v", "f", half, "n1", 0.1, True, 4)["limits"]["nvidia.com/gpu"] == "2"
    assert variant_spec(parent, "v", "f", half, "n1", 0.1, True, 1)["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in variant_spec(parent, "v", "f", dataclasses.replace(quarter, gpu=0.0, key=""),
                                                "n1", 0.1, True, 4)["limits"]


def test_a_cpu_variant_of_a_gpu_function_sees_no_gpu_and_a_gpu_variant_the_platforms():
    """The GPU image makes every device visible and a handler uses cuda when torch sees one: a CPU variant
    ran on a device the plan had not given it. A parent's CUDA_VISIBLE_DEVICES reaches neither."""
    from autoscaler.candidates import Candidate
    from autoscaler.variants import variant_spec

    gpu = Candidate(64, 0.5, 0.25, 0.02, 3000, 0, 0, 0.3, 2**30)
    cpu = dataclasses.replace(gpu, gpu=0.0, key="")
    parent = {"name": "f", "image": "img", "envVars": {"CUDA_VISIBLE_DEVICES": "0", "x": "1"},
              "annotations": {"com.openfaas.profile": "gpu"}}
    on_cpu = variant_spec(parent, "v", "f", cpu, "n1", 0.1, True, 4)["envVars"]
    on_gpu = variant_spec(parent, "v", "f", gpu, "n1", 0.1, True, 4)["envVars"]
    assert on_cpu["CUDA_VISIBLE_DEVICES"] == "-1" and on_cpu["x"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in on_gpu and on_gpu["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"


def test_a_variant_asking_other_gpu_units_than_its_share_now_needs_is_updated():
    """Deployed when every share asked for one unit; with gpu_slices=4 a 0.5 share asks for two."""
    from autoscaler.act import _stale
    from autoscaler.candidates import Candidate
    from autoscaler.variants import variant_spec

    half = Candidate(64, 0.5, 0.5, 0.02, 3000, 0, 0, 0.6, 2**30)
    spec = variant_spec({"name": "f", "image": "img"}, "v", "f", half, "n1", 0.1, True, 4)
    old = {**spec, "limits": {**spec["limits"], "nvidia.com/gpu": "1"}}
    assert _stale(Variant("v", 64, 0.5, 0.5, 2**30, "n1", 1, status=old), spec) == "limits nvidia.com/gpu"
    assert _stale(Variant("v", 64, 0.5, 0.5, 2**30, "n1", 1, status=spec), spec) == ""


def test_variants_named_by_an_earlier_rule_keep_their_names():
    """Names cut a node's name to 20 characters before; the rule now adds a hash. A running variant of the
    same (configuration, node, shard) is kept as it is, not deployed anew and deleted in one tick."""
    nodes = (Node("worker-1.example.com", 8, 16 * GiB), Node("worker-2.example.com", 8, 16 * GiB))
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT), nodes)
    running = []
    for c in changes(plan, snap, cfg):
        old_name = f"f-{c.spec['labels']['com.faas-infer.config']}-{c.spec['labels']['com.faas-infer.node'][:20]}"
        old_name = old_name.replace(".", "-") + "-" + c.name.rsplit("-", 1)[-1]
        assert old_name != c.name
        running.append(parse_variant({**c.spec, "name": old_name, "replicas": c.replicas,
                                      "availableReplicas": c.replicas}, 256 * 1024**2))
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT, variants=tuple(running)), nodes)
    assert changes(plan, snap, cfg) == []


def test_variants_pinned_as_faas_netes_dropped_or_under_other_constraints_are_updated_once():
    """The previous version pinned with "kubernetes.io/hostname == n1", which faas-netes dropped: those variants
    ran wherever Kubernetes put them, and nothing compared constraints, so they stayed unpinned. faas-netes
    reports no constraints in a FunctionStatus, so what a variant was deployed with is read from its labels."""
    nodes = (Node("n1", 4, 16 * GiB), Node("n2", 4, 16 * GiB))
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT), nodes)
    deployed = [c for c in changes(plan, snap, cfg)]
    assert deployed and {c.kind for c in deployed} == {"deploy"}

    def running(edit):
        return tuple(parse_variant({**edit(c.spec), "name": c.name, "replicas": c.replicas,
                                    "availableReplicas": c.replicas}, 256 * 1024**2) for c in deployed)

    as_faas_netes = lambda spec: {k: v for k, v in spec.items() if k != "constraints"}  # noqa: E731
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=PARENT, variants=running(as_faas_netes)), nodes)
    assert changes(plan, snap, cfg) == []  # as deployed: no churn although no constraints come back

    def previous(spec):
        labels = {k: v for k, v in spec["labels"].items() if k != "com.faas-infer.constraints"}
        node = spec["labels"]["com.faas-infer.node"]
        return {**spec, "labels": labels, "constraints": [f"kubernetes.io/hostname == {node}"]}

    ticks = roll_out(lambda variants: plan_for(fn("f", 500.0, spec=PARENT, variants=variants), nodes),
                     running(previous))
    assert sorted(c.name for t in ticks for c in t) == sorted(c.name for c in deployed)
    assert all(len(t) == 1 and "constraints" in t[0].reason for t in ticks)  # each once, one at a time
    confined = {**PARENT, "constraints": ["zone=a"]}
    labelled = tuple(dataclasses.replace(n, labels={"zone": "a"}) for n in nodes)
    plan, snap, cfg = plan_for(fn("f", 500.0, spec=confined, variants=running(as_faas_netes)), labelled)
    assert {c.kind for c in changes(plan, snap, cfg)} == {"update"}


def test_a_gpu_variant_on_a_platform_that_reports_no_gpu_limit_is_not_updated_every_tick():
    """faas-netes reports a function's limits as its memory and CPU only: every GPU variant read as asking for
    no nvidia.com/gpu and was updated (its pod replaced) every tick. The units it was deployed with are read
    from its label there."""
    from autoscaler.act import _stale
    from autoscaler.candidates import Candidate
    from autoscaler.variants import variant_spec

    half = Candidate(64, 0.5, 0.5, 0.02, 3000, 0, 0, 0.6, 2**30)
    spec = variant_spec({"name": "f", "image": "img"}, "v", "f", half, "n1", 0.1, True, 4)
    as_faas_netes = {**spec, "limits": {k: v for k, v in spec["limits"].items() if k != "nvidia.com/gpu"}}
    assert _stale(Variant("v", 64, 0.5, 0.5, 2**30, "n1", 1, status=as_faas_netes), spec) == ""
    once = variant_spec({"name": "f", "image": "img"}, "v", "f", half, "n1", 0.1, True, 1)  # gpu_slices was 1
    old = {**once, "limits": as_faas_netes["limits"]}
    assert _stale(Variant("v", 64, 0.5, 0.5, 2**30, "n1", 1, status=old), spec) == "limits nvidia.com/gpu"
