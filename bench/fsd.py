"""FSD-Inference benchmark: a GraphChallenge-style sparse DNN partitioned across W workers.

For W in {1, 2, 4, 8}, both channels (Redis queue, S3 object storage on the local S3-compatible server)
and both partitioners (connectivity-aware, random): latency per sample batch (median of --repeat runs),
values, bytes and messages exchanged between workers, channel requests, and the modelled cost per example
(fsd.cost, AWS list prices), against single-function inference (the unpartitioned model in one function).
Every run's outputs are checked against the unpartitioned model's.

Workers run as threads of this process (the machine has 2 cores); Redis and the S3 server are separate
processes on loopback ports. The integration tests run them as real watchdog functions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench._argtypes import at_least, positive

HELP = "distributed sparse-DNN inference (FSD-Inference): latency, traffic and cost per W, channel, partitioner"

_S3_MAIN = ("import sys, time; from fsd.s3_server import S3Server; s = S3Server(int(sys.argv[1])).start(); "
            "print('ready', flush=True); time.sleep(1e9)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer bench fsd`."""
    parser.add_argument("--neurons", type=at_least(2), default=1024,
                        help="neurons per layer (default 1024; 4096 also GraphChallenge)")
    parser.add_argument("--layers", type=at_least(1), default=120, help="layers of the sparse DNN (default 120)")
    parser.add_argument("--batch", type=at_least(1), default=16, help="samples per batch (default 16)")
    parser.add_argument("--workers", default="1,2,4,8", type=_counts,
                        help="comma-separated worker counts (default 1,2,4,8)")
    parser.add_argument("--channels", default="redis,s3", type=_names("redis", "s3"),
                        help="comma-separated channels (default redis,s3)")
    parser.add_argument("--partitioners", default="connectivity,random", type=_names("connectivity", "random"),
                        help="comma-separated ways to split each layer's neurons across the workers: connectivity "
                             "(connectivity-aware: fewer activations cross workers), random (default "
                             "connectivity,random)")
    parser.add_argument("--repeat", type=at_least(1), default=3,
                        help="runs per configuration; latency is the median (default 3)")
    parser.add_argument("--single-memory-mb", type=_megabytes, default=2048.0,
                        help="memory billed for single-function inference (default 2048)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON to FILE")


# -1 was billed as negative GB-seconds, and the single function's cost printed below its invocation price;
# nan made the JSON unreadable.
_megabytes = positive("MB")


def _counts(value: str) -> str:
    """An argparse type: comma-separated whole numbers >= 1 (checked; kept as the text)."""
    for part in value.split(","):
        at_least(1)(part)
    return value


def _names(*allowed: str):
    """An argparse type: comma-separated names among ``allowed`` (checked; kept as the text). An unknown
    channel was benchmarked as S3 under its own name, an unknown partitioner failed after the others ran."""
    def parse(value: str) -> str:
        for part in value.split(","):
            if part not in allowed:
                raise argparse.ArgumentTypeError(f"{part!r}: must be one of {', '.join(allowed)}")
        return value
    return parse


def _start_s3() -> tuple[subprocess.Popen, str]:
    from bench.common import REPO, free_port

    port = free_port()
    s3 = subprocess.Popen([sys.executable, "-c", _S3_MAIN, str(port)], stdout=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": REPO})
    s3.stdout.readline()
    return s3, f"http://127.0.0.1:{port}"


def _channel(kind: str, redis_url: str, s3_url: str, workers: int = 1):
    """The channel of ``kind``, shared by up to ``workers`` worker threads (and the coordinator)."""
    from fsd.redis_channel import RedisQueueChannel
    from fsd.s3_channel import S3Channel
    from fsd.s3_client import S3Client

    if kind == "redis":
        return RedisQueueChannel.from_url(redis_url, users=workers)
    client = S3Client(s3_url)
    client.create_bucket("fsd")
    return S3Channel(client, "fsd")


def _measure(model, parts, channel, x, expected, repeat: int) -> dict:
    import numpy as np

    from fsd.coordinator import Coordinator
    from fsd.invoke import LocalInvoker
    from fsd.partition import traffic
    from fsd.schedule import coordinator_plan, worker_program

    programs = {r: worker_program(model, parts, r) for r in range(parts.workers)}
    coordinator = Coordinator(coordinator_plan(model, parts), channel, LocalInvoker(programs, channel), timeout=120)
    results = [coordinator.run(x) for _ in range(repeat)]
    last = results[-1]
    return {"latency_s": statistics.median(r.seconds for r in results),
            "max_abs_error": float(max(np.abs(r.outputs - expected).max() for r in results)),
            "values_exchanged": traffic(model, parts).exchange * len(x),
            "bytes_exchanged": last.exchange.bytes, "messages_exchanged": last.exchange.messages,
            "messages_total": last.usage.messages, "requests": dict(last.usage.requests),
            "cost_per_example_usd": statistics.median(r.cost.per_example_usd for r in results),
            "channel_usd": last.cost.channel_usd, "gb_seconds": last.cost.gb_seconds}


def _single(model, x, repeat: int, memory_mb: float) -> tuple[dict, "object"]:
    from fsd.cost import Prices, run_cost
    from fsd.channel import Usage
    from fsd.model import forward

    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = forward(model, x)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    cost = run_cost(Prices(), "redis", [(memory_mb, seconds)], Usage(), len(x))
    return ({"workers": 0, "channel": "-", "partitioner": "single function", "latency_s": seconds,
             "max_abs_error": 0.0, "values_exchanged": 0, "bytes_exchanged": 0, "messages_exchanged": 0,
             "messages_total": 0, "requests": {}, "cost_per_example_usd": cost.per_example_usd,
             "channel_usd": 0.0, "gb_seconds": cost.gb_seconds}, out)


def _table(rows: list[dict]) -> str:
    head = f"{'W':>2} {'channel':<7} {'partitioner':<15} {'latency s':>9} {'exch MB':>8} {'exch msgs':>9} " \
           f"{'requests':>8} {'$/example':>10} {'max err':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['workers']:>2} {r['channel']:<7} {r['partitioner']:<15} {r['latency_s']:>9.3f} "
                     f"{r['bytes_exchanged'] / 1e6:>8.3f} {r['messages_exchanged']:>9} "
                     f"{sum(r['requests'].values()):>8} {r['cost_per_example_usd']:>10.3e} {r['max_abs_error']:>8.1e}")
    return "\n".join(lines)


def _targets(rows: list[dict], top: int) -> list[str]:
    def find(w, ch, p):
        return next((r for r in rows if r["workers"] == w and r["channel"] == ch and r["partitioner"] == p), None)

    notes = [f"identical outputs: max |error| {max(r['max_abs_error'] for r in rows):.1e} over every run"]
    for w in sorted({r["workers"] for r in rows if r["workers"] > 1}):
        smart, rand = find(w, "redis", "connectivity") or find(w, "s3", "connectivity"), \
            find(w, "redis", "random") or find(w, "s3", "random")
        if smart and rand and smart["bytes_exchanged"]:
            notes.append(f"W={w}: random moves {rand['bytes_exchanged'] / smart['bytes_exchanged']:.1f}x the bytes "
                         f"of connectivity-aware (target >= 3x)")
    q, s = find(top, "redis", "connectivity"), find(top, "s3", "connectivity")
    if q and s:
        notes.append(f"W={top}: queue ${q['cost_per_example_usd']:.3e} vs object storage "
                     f"${s['cost_per_example_usd']:.3e} per example ({s['cost_per_example_usd'] / q['cost_per_example_usd']:.1f}x)")
    return notes


def _sweep(args: argparse.Namespace, model, x, expected, channels: dict) -> list[dict]:
    """Every worker count x partitioner x channel; one row each, printed as it lands."""
    from fsd.partition import partition

    rows = []
    for w in [int(v) for v in args.workers.split(",")]:
        for method in args.partitioners.split(","):
            t = time.perf_counter()
            parts = partition(model, w, method)
            seconds = time.perf_counter() - t
            for kind, channel in channels.items():
                row = {"workers": w, "channel": kind, "partitioner": method, "partition_s": seconds}
                row.update(_measure(model, parts, channel, x, expected, args.repeat))
                rows.append(row)
                print(_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write JSON when asked."""
    from bench.common import PrivateRedis, write_json
    from fsd.errors import ConfigError
    from fsd.model import ModelSpec, generate, inputs
    from fsd.partition import check_workers

    try:
        spec = ModelSpec(neurons=args.neurons, layers=args.layers)
        check_workers(max(int(v) for v in args.workers.split(",")), spec.neurons)
    except ConfigError as exc:
        print(f"faas-infer bench fsd: {exc}", file=sys.stderr)
        return 2
    model = generate(spec)
    x = inputs(spec, args.batch)
    single, expected = _single(model, x, args.repeat, args.single_memory_mb)
    rows = [single]
    s3, s3_url = _start_s3()
    try:
        with PrivateRedis() as server:
            most = max(int(v) for v in args.workers.split(","))
            rows += _sweep(args, model, x, expected, {c: _channel(c, server.url, s3_url, most)
                                                      for c in args.channels.split(",")})
    finally:
        s3.terminate()
        s3.wait(10)
    print(f"model: {spec.neurons} neurons x {spec.layers} layers, batch {args.batch}, median of {args.repeat}")
    print(_table(rows))
    for note in _targets(rows, max(r["workers"] for r in rows)):
        print(note)
    if args.json:
        write_json(args.json, {"model": {"neurons": spec.neurons, "layers": spec.layers, "batch": args.batch},
                               "rows": rows, "targets": _targets(rows, max(r["workers"] for r in rows))}, indent=1)
    return 0
