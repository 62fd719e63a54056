"""faasd compose additions, Kubernetes manifests, Prometheus configs and Grafana provisioning, checked as
files: the keys faasd accepts, the fields Kubernetes needs, promtool's own check, and dashboards that are
valid provisioning JSON whose queries name only series our components (or the gateway) export."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

from helpers import REPO, metrics_stub, wait_until

DOCKER = os.path.join(REPO, "docker")
FIXTURE_METRICS = os.path.join(REPO, "tests", "fixtures", "openfaas", "gateway-metrics.txt")

# What faasd's compose loader reads (faasd pkg/deployment_order.go / supervisor.go); anything else is ignored.
FAASD_KEYS = {"image", "environment", "volumes", "command", "cap_add", "depends_on", "user", "ports"}
FAASD_CORE = {"basic-auth-plugin", "nats", "gateway", "queue-worker", "prometheus"}
# Environment the autoscaler reads besides AutoscalerConfig's fields.
AUTOSCALER_EXTRA_ENV = {"metrics_port", "LOG_LEVEL"}


def autoscaler_fields() -> set[str]:
    from autoscaler.config import AutoscalerConfig

    return {f.name for f in dataclasses.fields(AutoscalerConfig)}


def load_yaml_docs(path: str) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# faasd ---------------------------------------------------------------------------------------------------

def test_faasd_additions_use_only_keys_faasd_accepts():
    doc = load_yaml_docs(os.path.join(DOCKER, "faasd", "docker-compose.faas-infer.yaml"))[0]
    services = doc["services"]
    assert set(services) == {"redis", "autoscaler"}
    for name, svc in services.items():
        assert set(svc) <= FAASD_KEYS, f"{name}: {set(svc) - FAASD_KEYS} not read by faasd"
        assert isinstance(svc["image"], str) and ":" in svc["image"], f"{name}: pin an image tag"
        for dep in svc.get("depends_on", []):
            assert dep in FAASD_CORE | set(services), f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            assert volume["type"] == "bind" and volume["source"].startswith("./") and volume["target"].startswith("/")
        for port in svc.get("ports", []):
            host = port.split(":")[0]
            assert host in ("127.0.0.1", "10.62.0.1"), f"{name}: {port} must not bind every interface"
        assert isinstance(svc.get("command", []), list)
        if "user" in svc:
            assert svc["user"].isdigit() and svc["user"] != "0"


def test_faasd_autoscaler_has_the_gateway_secrets_and_known_settings():
    svc = load_yaml_docs(os.path.join(DOCKER, "faasd", "docker-compose.faas-infer.yaml"))[0]["services"]["autoscaler"]
    env = dict(item.split("=", 1) for item in svc["environment"])
    assert set(env) <= autoscaler_fields() | AUTOSCALER_EXTRA_ENV, set(env) - autoscaler_fields()
    targets = {v["target"]: v["source"] for v in svc["volumes"]}
    for name in ("basic-auth-user", "basic-auth-password"):
        assert targets[f"{env['secret_mount_path']}/{name}"] == f"./secrets/{name}"
    assert env["gateway_url"] == "http://gateway:8080" and env["redis_url"].startswith("redis://redis:")
    from autoscaler.config import AutoscalerConfig

    config = AutoscalerConfig.from_env(env)  # every value parses and passes the config's rules
    assert config.max_replicas_per_variant == 1  # faasd runs one replica per function


def test_faasd_redis_is_reachable_from_functions_and_persists_nothing():
    svc = load_yaml_docs(os.path.join(DOCKER, "faasd", "docker-compose.faas-infer.yaml"))[0]["services"]["redis"]
    assert svc["ports"] == ["10.62.0.1:6379:6379"]  # faasd's openfaas0 bridge address, where functions look
    command = svc["command"]
    assert command[command.index("--save") + 1] == "" and command[command.index("--appendonly") + 1] == "no"


# Kubernetes ----------------------------------------------------------------------------------------------

def manifests() -> dict[tuple[str, str], dict]:
    out = {}
    for path in glob.glob(os.path.join(DOCKER, "kubernetes", "*.yaml")):
        for doc in load_yaml_docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_kubernetes_deployments_are_complete():
    docs = manifests()
    deployments = [d for (kind, _), d in docs.items() if kind == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"faas-infer-redis", "faas-infer-autoscaler"}
    for d in deployments:
        assert d["metadata"]["namespace"] == "openfaas"
        pod = d["spec"]["template"]
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in pod["spec"]["containers"]:
            assert set(c["resources"]) == {"requests", "limits"}
            assert {"cpu", "memory"} <= set(c["resources"]["limits"])
            assert "readinessProbe" in c and "livenessProbe" in c
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod["spec"].get("volumes", [])}
    for (kind, name), svc in docs.items():
        if kind == "Service":
            deployment = docs[("Deployment", name)]
            assert svc["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
            ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


def test_kubernetes_autoscaler_account_secret_and_settings():
    docs = manifests()
    sa = docs[("ServiceAccount", "faas-infer-autoscaler")]
    assert sa["automountServiceAccountToken"] is False  # it needs no Kubernetes API access
    spec = docs[("Deployment", "faas-infer-autoscaler")]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one decision maker
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "faas-infer-autoscaler"
    [c] = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert set(env) <= autoscaler_fields() | AUTOSCALER_EXTRA_ENV
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts[env["secret_mount_path"]]]["secret"]["secretName"] == "basic-auth"
    nodes_dir, nodes_file = os.path.split(env["nodes_file"])
    cm = docs[("ConfigMap", volumes[mounts[nodes_dir]]["configMap"]["name"])]
    from autoscaler.config import AutoscalerConfig
    from autoscaler.nodes import load_nodes

    AutoscalerConfig.from_env(env)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"faas-infer-nodes-{os.getpid()}.yaml")
    with open(path, "w") as f:
        f.write(cm["data"][nodes_file])
    try:
        nodes = load_nodes(path)
    finally:
        os.remove(path)
    assert any(n.gpus for n in nodes) and all(n.labels.get("kubernetes.io/hostname") == n.name for n in nodes)
    assert c["ports"][0]["containerPort"] == int(env["metrics_port"])


def test_kubernetes_gpu_path():
    profile = manifests()[("Profile", "gpu")]
    assert profile["apiVersion"] == "openfaas.com/v1" and profile["spec"]["runtimeClassName"] == "nvidia"
    assert any(t["key"] == "nvidia.com/gpu" for t in profile["spec"]["tolerations"])
    from faas_infer.stack import load_stack

    stack = load_stack(os.path.join(DOCKER, "kubernetes", "gpu-stack.yml"), {})
    raw = yaml.safe_load(open(os.path.join(DOCKER, "kubernetes", "gpu-stack.yml")))["functions"]["resnet-gpu"]
    assert raw["lang"] == "python3-torch-batch-gpu" and os.path.isdir(os.path.join(DOCKER, raw["lang"]))
    assert raw["annotations"]["com.openfaas.profile"] == "gpu"
    # faas-netes splits a constraint on "=" and keeps it only if that gives two parts (Swarm's "==" is dropped)
    assert all(len(c.split("=")) == 2 and re.fullmatch(r"[\w./-]+=[\w./-]+", c) for c in raw["constraints"])
    assert "nvidia.com/gpu" not in raw["limits"]  # faas-cli drops it; the autoscaler sets it over the API
    assert "resnet-gpu" in stack.functions


# Prometheus ----------------------------------------------------------------------------------------------

def promtool_check(tmp_path, config: dict) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs it (Debian: apt-get install prometheus)")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    for sd in ("watchdogs.json",):
        (tmp_path / sd).write_text("[]")
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configs_pass_promtool(tmp_path):
    standalone = yaml.safe_load(open(os.path.join(DOCKER, "prometheus", "prometheus.yml")))
    assert [j["job_name"] for j in standalone["scrape_configs"]] == ["gateway", "watchdogs", "autoscaler"]
    promtool_check(tmp_path, standalone)
    json.load(open(os.path.join(DOCKER, "prometheus", "watchdogs.json")))
    for fragment in ("faasd/prometheus-job.yml", "prometheus/kubernetes-jobs.yml"):
        jobs = yaml.safe_load(open(os.path.join(DOCKER, fragment)))
        assert isinstance(jobs, list) and all("job_name" in j for j in jobs)
        for job in jobs:
            # Debian's Prometheus is built without Kubernetes discovery: check the rest of the job with a
            # static target in its place (relabelling, intervals), and the discovery block by shape.
            sd = job.pop("kubernetes_sd_configs", None)
            if sd is not None:
                assert sd == [{"role": "pod", "namespaces": {"names": ["openfaas-fn"]}}]
                job["static_configs"] = [{"targets": ["10.0.0.1:8081"]}]
        promtool_check(tmp_path, {"global": {"scrape_interval": "5s"}, "scrape_configs": jobs})


def test_kubernetes_watchdog_job_reports_a_variant_as_its_parent():
    """The pod label the watchdog job relabels from is the one the autoscaler puts on variants (Prometheus
    writes a label's name with every character outside [a-zA-Z0-9_] as "_"), and faas-infer up's targets
    do the same, so the function dashboard shows the variants' watchdogs on both."""
    from faas_infer.stack import LABEL_PARENT

    [job] = [j for j in yaml.safe_load(open(os.path.join(DOCKER, "prometheus", "kubernetes-jobs.yml")))
             if j["job_name"] == "faas-infer-watchdogs"]
    meta = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", LABEL_PARENT)
    [rule] = [r for r in job["relabel_configs"] if meta in r.get("source_labels", ())]
    assert rule["target_label"] == "function_name"



class Exposition:
    """A loopback server answering GET /metrics with fixed text, or 404 (the OpenFaaS gateway's API port)."""

    def __init__(self, text: str | None) -> None:
        self.server = metrics_stub(None if text is None else text.encode())
        self.target = f"127.0.0.1:{self.server.server_address[1]}"


def test_standalone_prometheus_reads_the_gateway_series_once_from_either_gateway(tmp_path):
    """faas-infer's provider serves gateway_* on its API port, beside the autoscaler on 8082; the OpenFaaS
    gateway serves them on 8082 only. The standalone config, its ports mapped to stand-ins, counts each
    series once in its own job either way."""
    from autoscaler.metrics import AutoscalerMetrics
    from faas_infer.ports import free_port
    from ops.prometheus import Prometheus, find_binary

    gateway_text = open(FIXTURE_METRICS).read()
    metrics = AutoscalerMetrics()
    metrics.slo.set(0.1, function_name="py-echo.openfaas-fn")
    autoscaler_text = metrics.registry.render()
    standalone = open(os.path.join(DOCKER, "prometheus", "prometheus.yml")).read()
    assert "127.0.0.1:8083" not in standalone
    provider_side = {"127.0.0.1:8080": gateway_text, "127.0.0.1:8082": autoscaler_text}
    openfaas_side = {"127.0.0.1:8080": None, "127.0.0.1:8082": gateway_text, "127.0.0.1:8083": autoscaler_text}
    # the file as shipped beside an OpenFaaS gateway, its autoscaler not yet moved off 8082
    unedited = {"127.0.0.1:8080": None, "127.0.0.1:8082": gateway_text}
    for n, ports in enumerate((provider_side, openfaas_side, unedited)):
        autoscaled = autoscaler_text in ports.values()
        servers = {address: Exposition(text) for address, text in ports.items()}
        config = yaml.safe_load(standalone)
        config["global"] = {"scrape_interval": "500ms", "evaluation_interval": "500ms"}
        for job in config["scrape_configs"]:
            for static in job.get("static_configs", []):
                static["targets"] = [servers[t].target for t in static["targets"]]
            if job["job_name"] == "autoscaler" and "127.0.0.1:8083" in ports:  # moved off the gateway's 8082
                job["static_configs"] = [{"targets": [servers["127.0.0.1:8083"].target]}]
        run = tmp_path / f"run{n}"
        run.mkdir()
        (run / "watchdogs.json").write_text("[]")
        (run / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port("127.0.0.1", 23550)
        proc = subprocess.Popen([find_binary(), f"--config.file={run / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={run / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=str(run))
        prom = Prometheus(str(run), (), port=port)  # for its query()
        try:
            def jobs_of(selector: str) -> dict:
                return {r["metric"]["job"]: float(r["value"][1]) for r in prom.query(f"count by (job) ({selector})")}

            def scraped() -> bool:
                try:
                    return bool(jobs_of('{__name__=~"gateway_.*"}')) and (
                        not autoscaled or bool(jobs_of('{__name__=~"faas_infer_.*"}')))
                except Exception:  # noqa: BLE001 - not ready yet
                    return False

            wait_until(scraped, 30, 0.2, what="both kinds of series scraped")
            time.sleep(1.5)  # a few more scrapes of every target
            assert set(jobs_of('{__name__=~"gateway_.*"}')) == {"gateway"}
            assert set(jobs_of('{__name__=~"faas_infer_autoscaler_.*"}')) == ({"autoscaler"} if autoscaled else set())
            [total] = prom.query('sum(gateway_function_invocation_total{function_name="py-echo.openfaas-fn"})')
            assert total["value"][1] == "3"  # the fixture's three calls, counted once
        finally:
            proc.terminate()
            proc.wait(10)
            for server in servers.values():
                server.server.shutdown()


def test_generated_config_passes_promtool(tmp_path):
    from ops.prometheus import render_config, stack_jobs

    promtool_check(tmp_path, render_config(stack_jobs("127.0.0.1:8080", "127.0.0.1:8082"), str(tmp_path), 1.0))


# Grafana -------------------------------------------------------------------------------------------------

def dashboards() -> dict[str, dict]:
    return {os.path.basename(p): json.load(open(p))
            for p in sorted(glob.glob(os.path.join(DOCKER, "grafana", "dashboards", "*.json")))}


def known_series() -> set[str]:
    """Every series name the gateway, the watchdog and the autoscaler export (histograms expanded)."""
    from autoscaler.metrics import AutoscalerMetrics
    from watchdog.metrics import WatchdogMetrics

    names = set()
    for line in open(FIXTURE_METRICS):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    for registry in (WatchdogMetrics().registry, AutoscalerMetrics().registry):
        for metric in registry._metrics:
            names.add(metric.name)
            if metric.kind == "histogram":
                names |= {metric.name + s for s in ("_bucket", "_sum", "_count")}
    return names


# Labels every scrape adds, and those the watchdogs' scrape configs give each target (ops/targets.py,
# prometheus/kubernetes-jobs.yml, prometheus/watchdogs.json).
SCRAPE_LABELS = {"job", "instance"}
WATCHDOG_TARGET_LABELS = {"function_name", "instance_id"}


def known_labels() -> dict[str, set[str]]:
    """The labels each exported series carries once scraped (histograms expanded, ``le`` on buckets)."""
    from autoscaler.metrics import AutoscalerMetrics
    from ops.scrape import parse_text
    from watchdog.metrics import WatchdogMetrics

    out: dict[str, set[str]] = {}
    for sample in parse_text(open(FIXTURE_METRICS).read()):
        out.setdefault(sample.name, set(SCRAPE_LABELS)).update(sample.labels)
    for registry, extra in ((WatchdogMetrics().registry, WATCHDOG_TARGET_LABELS),
                            (AutoscalerMetrics().registry, set())):
        for metric in registry._metrics:
            names = set(metric.label_names) | extra | SCRAPE_LABELS
            if metric.kind == "histogram":
                out.update({metric.name + "_bucket": names | {"le"}, metric.name + "_sum": names,
                            metric.name + "_count": names})
            else:
                out[metric.name] = names
    return out


def test_dashboards_are_valid_provisioning_json():
    boards = dashboards()
    assert set(boards) == {"faas-infer-overview.json", "faas-infer-function.json", "faas-infer-autoscaler.json"}
    uids = set()
    for name, d in boards.items():
        assert {"uid", "title", "panels", "schemaVersion", "templating", "time"} <= set(d), name
        assert "id" not in d or d["id"] is None  # provisioned dashboards must not carry a database id
        assert d["uid"] not in uids and len(d["uid"]) <= 40
        uids.add(d["uid"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids, cells = set(), set()
        for p in d["panels"]:
            assert p["id"] not in ids
            ids.add(p["id"])
            assert p["type"] in {"timeseries", "stat", "table", "gauge", "bargauge"}
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: panel {p['title']} overlaps another"
                    cells.add((x, y))
            assert p["datasource"]["uid"] == "${datasource}"
            refs = [t["refId"] for t in p["targets"]]
            assert p["targets"] and len(refs) == len(set(refs))
            for t in p["targets"]:
                for var in re.findall(r"\$(\w+)", t["expr"]):
                    assert var in variables or var.startswith("__"), f"{name}: ${var} is not a variable"


def test_dashboard_queries_name_only_exported_series():
    known = known_series()
    for name, d in dashboards().items():
        for p in d["panels"]:
            for t in p["targets"]:
                expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", t["expr"])
                words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
                series = {w for w in words if w.startswith(("gateway_", "faas_infer_", "http_request"))}
                assert series, f"{name} / {p['title']}: no series"
                assert series <= known, f"{name} / {p['title']}: unknown {series - known}"
                check_labels(f"{name} / {p['title']} / {t['refId']}", t["expr"], t.get("legendFormat", ""))
    # The core figures use the gateway's names, so the dashboards serve real OpenFaaS as well.
    overview = json.dumps(dashboards()["faas-infer-overview.json"])
    for series in ("gateway_function_invocation_total", "gateway_functions_seconds_bucket", "gateway_service_count"):
        assert series in overview


def check_labels(where: str, expr: str, legend: str) -> None:
    """A selector names only labels its series carries; ``by``/``on`` and the legend only labels some series
    of the query carries, and the legend only those its aggregation keeps."""
    labels = known_labels()
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        used = set(re.findall(r"(\w+)\s*[!=]~?\s*\"", m.group(2)))
        assert used <= labels[m.group(1)], f"{where}: {m.group(1)} has no {used - labels[m.group(1)]}"
    words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", expr))
    carried = set().union(*(labels[w] for w in words if w in labels))
    kept = set()
    for group in re.findall(r"\b(by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        names = {x.strip() for x in group[1].split(",") if x.strip()}
        assert names <= carried, f"{where}: {group[0]} ({', '.join(sorted(names - carried))}): no series has it"
        if group[0] == "by":
            kept |= names
    shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    assert shown <= (kept if re.search(r"\b(sum|max|min|avg|count)\b", expr) else carried), \
        f"{where}: legend {legend!r} names a label the query does not keep"


def test_label_check_catches_what_grafana_would_show_empty():
    check_labels("ok", 'sum by (config) (faas_infer_autoscaler_instances{kind="variant"})', "{{config}}")
    for expr, legend in (('faas_infer_autoscaler_plan_cost{function_name="x"}', ""),
                         ("sum by (instance_id) (faas_infer_autoscaler_queue_depth)", ""),
                         ("sum by (function_name) (faas_infer_autoscaler_instances)", "{{config}}")):
        with pytest.raises(AssertionError):
            check_labels("bad", expr, legend)


def test_grafana_provisioning_files():
    ds = yaml.safe_load(open(os.path.join(DOCKER, "grafana", "provisioning", "datasources", "prometheus.yaml")))
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["url"]
    prov = yaml.safe_load(open(os.path.join(DOCKER, "grafana", "provisioning", "dashboards", "faas-infer.yaml")))
    assert prov["apiVersion"] == 1
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def panel(dashboard: str, panel_id: int) -> dict:
    return next(p for p in dashboards()[dashboard]["panels"] if p["id"] == panel_id)


def promtool_expect(tmp_path, exposition: str, cases: list) -> None:
    """Evaluate PromQL with promtool's rule tests over series held at the values of ``exposition`` (Prometheus
    text); ``cases`` are (expr, [(labels, value)...]), the whole result each expression must give."""
    from ops.scrape import parse_text

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs it (Debian: apt-get install prometheus)")

    def selector(labels: dict) -> str:
        return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    series = [{"series": s.name + selector(s.labels), "values": f"{s.value:g} {s.value:g} {s.value:g}"}
              for s in parse_text(exposition)]
    tests = [{"expr": expr, "eval_time": "2m",
              "exp_samples": [{"labels": selector(labels), "value": value} for labels, value in samples]}
             for expr, samples in cases]
    path = tmp_path / "promql-test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": [
        {"interval": "1m", "input_series": series, "promql_expr_test": tests}]}))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_planned_and_running_instances_count_the_same_instances(tmp_path):
    """The autoscaler plans variants only, while its running count holds the function's own deployment too:
    with the plan carried out the two lines meet, and a function running only its deployment shows it planned."""
    from autoscaler.metrics import AutoscalerMetrics
    from autoscaler.plan import FunctionPlan, Plan, Target
    from autoscaler.snapshot import FunctionState, Node, Snapshot, Variant

    mem = 512 * 1024**2
    conv = FunctionState("conv", 0.1, variants=(Variant("conv", 1, 1.0, 0.0, mem, "", 1, pinned=True),
                                                Variant("conv-b8-c1000-g0-0", 8, 1.0, 0.0, mem, "", 2)))
    solo = FunctionState("solo", 0.1, variants=(Variant("solo", 4, 1.0, 0.0, mem, "", 1, pinned=True),))
    plan = Plan(True, "", 0.0, (FunctionPlan("conv", 50.0, 60.0, 2.0, (Target("conv", "b8-c1000-g0", "", 2),)),
                                FunctionPlan("solo", 1.0, 20.0, 0.0)), solver="greedy", status="greedy")
    metrics = AutoscalerMetrics()
    metrics.record_tick(Snapshot(0.0, (conv, solo), (Node("a", 4, 8 * mem),)), plan, 0.01)
    # The gateway counts every deployment by its own name: variants too.
    gateway = ('gateway_service_count{function_name="conv.openfaas-fn"} 1\n'
               'gateway_service_count{function_name="conv-b8-c1000-g0-0.openfaas-fn"} 2\n'
               'gateway_service_count{function_name="solo.openfaas-fn"} 1\n')
    exposition = metrics.registry.render() + gateway
    both = [({"function_name": "conv.openfaas-fn"}, 3), ({"function_name": "solo.openfaas-fn"}, 1)]
    overall = panel("faas-infer-autoscaler.json", 7)
    assert [t["legendFormat"] for t in overall["targets"]] == ["planned {{function_name}}", "running {{function_name}}"]
    cases = [(t["expr"], both) for t in overall["targets"]]
    one = panel("faas-infer-function.json", 12)
    totals = [t["expr"] for t in one["targets"] if "{{" not in t["legendFormat"]]
    assert len(totals) == 2
    for fn, n in (("conv.openfaas-fn", 3), ("solo.openfaas-fn", 1)):
        cases += [(expr.replace("$function", fn), [({}, n)]) for expr in totals]
    promtool_expect(tmp_path, exposition, cases)


def target_unit(p: dict, ref: str) -> str:
    """The unit Grafana shows a target's series in: an override matching its refId, else the panel's."""
    for o in p["fieldConfig"].get("overrides", []):
        if o["matcher"] == {"id": "byFrameRefID", "options": ref}:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    return prop["value"]
    return p["fieldConfig"]["defaults"]["unit"]


def test_series_in_seconds_are_shown_in_seconds():
    for name, d in dashboards().items():
        for p in d["panels"]:
            for t in p["targets"]:
                expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", t["expr"])
                words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
                series = {w for w in words if w.startswith(("gateway_", "faas_infer_"))}
                seconds = {re.sub(r"_(bucket|sum|count)$", "", s).endswith("_seconds") for s in series}
                unit = target_unit(p, t["refId"])
                if seconds == {True}:
                    assert unit == ("ms" if "* 1000" in expr else "s"), f"{name} / {p['title']} / {t['refId']}: {unit}"
                else:
                    assert unit not in ("s", "ms"), f"{name} / {p['title']} / {t['refId']}: {unit}"


def test_refusals_show_zero_only_when_there_are_none(tmp_path):
    """The refusals panel falls back to one 0 series when nothing was refused, and adds no unnamed 0 line
    beside the reasons when something was (``or vector(0)`` matched no reason, so it always added one)."""
    [expr] = [t["expr"] for t in panel("faas-infer-function.json", 10)["targets"]]
    expr = expr.replace("$__rate_interval", "3m")
    refusing = 'faas_infer_requests_refused_total{function_name="a.openfaas-fn",reason="slo"} 0\n'
    cases = [(expr.replace("$function", "a.openfaas-fn"), [({"reason": "slo"}, 0)]),
             (expr.replace("$function", "b.openfaas-fn"), [({}, 0)])]
    promtool_expect(tmp_path, refusing, cases)
