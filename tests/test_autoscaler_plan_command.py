"""``faas-infer plan`` against a real HTTP gateway and Redis: what it prints of the plan."""

from __future__ import annotations

import argparse
import json
import time

from autoscaler import plan_command
from batcher import stats
from helpers import http_stub

HOT = {"name": "hot", "replicas": 1, "availableReplicas": 1, "envVars": {"max_batch_size": "4"},
       "annotations": {"com.faas-infer.latency_slo": "200ms", "com.faas-infer.model": "functions/resnet"},
       "limits": {"cpu": "2", "memory": "1Gi"}}
CALM = {**HOT, "name": "calm", "limits": {"cpu": "500m", "memory": "1Gi"}}
TIGHT = {"name": "tight", "replicas": 1, "availableReplicas": 1,
         "annotations": {"com.faas-infer.latency_slo": "1ms", "com.faas-infer.model": "functions/resnet"},
         "limits": {"cpu": "500m", "memory": "1Gi"}}


def serve(functions: list[dict]):
    body = json.dumps(functions).encode()
    return http_stub(lambda path: (200, body))


def test_a_function_short_of_room_or_infeasible_is_not_said_to_be_served_by_its_parent(
        redis_client, redis_server, tmp_path, capsys):
    now = time.time()
    pipe = redis_client.pipeline()
    for second in range(20):
        stats.record_arrival(pipe, "hot", now - second, 400)
        stats.record_arrival(pipe, "calm", now - second, 1)
    pipe.execute()
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("- {name: n1, cpu: 3, memory: 8Gi}\n")  # the parents' 3 cores: no room for a variant
    server = serve([HOT, CALM, TIGHT])
    parser = argparse.ArgumentParser()
    plan_command.add_arguments(parser)
    args = parser.parse_args(["--gateway", f"http://127.0.0.1:{server.server_address[1]}",
                              "--redis-url", redis_server.url, "--nodes-file", str(nodes)])
    try:
        assert plan_command.run(args) == 0
    finally:
        server.shutdown()
        server.server_close()
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert "weighted resources 0.000 (no bound: demand left short)" in header  # no "bound" above the cost
    planned = {row.split()[0]: row.split("   (")[0].split(maxsplit=4)[4] for row in rows[:3]}
    assert planned == {"hot": "none", "tight": "none (left as it runs)", "calm": "none (the parent suffices)"}


def test_plan_offers_no_flag_only_the_running_loop_reads():
    """One decision has no tick interval and serves no /metrics: its --help does not offer them as if it did."""
    from autoscaler.autoscale_command import add_arguments as autoscale_arguments

    plan, loop = argparse.ArgumentParser(), argparse.ArgumentParser()
    plan_command.add_arguments(plan)
    autoscale_arguments(loop)
    flags = {parser: {s for a in parser._actions for s in a.option_strings} for parser in (plan, loop)}
    assert {"--interval", "--metrics-port", "--metrics-bind"} <= flags[loop]
    assert not {"--interval", "--metrics-port", "--metrics-bind"} & flags[plan]
    assert flags[plan] - {"--json"} <= flags[loop]
