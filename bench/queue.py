"""Queue benchmark: the Redis batch queue against the in-process one, and how two instances share a queue.

For each function (the no-op ``functions/echo`` and ``functions/mlp``), one watchdog with the in-process
backend and one with the Redis backend (a private redis-server on a free loopback port) are served side
by side and measured in alternating slices (0.25 s, then 0.5 s), so both see the same machine: this VM's
speed changes by up to 2x from one second to the next, and back-to-back runs of one backend then the other
differed by more than the backends do. Each is measured (a) at 10 req/s (Poisson, one second of each in
turn: the low load at which an idle instance runs a request at once, with either backend), (b) with one
request at a time back to back (closed loop, concurrency 1: every request goes through the queue, the
latency the backend adds) and (c) closed loop at ``--concurrency`` (throughput, with its p50/p99, and the
CPU time per request spent by the watchdog and by redis-server during its slices).
Then two Redis instances with different ``max_batch_size`` serve the function from one queue while load
goes to the first only; each one's share of the requests run is read from the queue statistics in Redis.

Each instance gets ``cpu_limit=1`` (one torch thread); the load generator (``bench.loadgen``) shares the
machine, so compare the backends by ratio within one run, never across runs.
"""

from __future__ import annotations

import argparse
import os
import time

from bench._argtypes import at_least, seconds
from bench.common import PrivateRedis, write_json

HELP = "Redis shared batch queue vs in-process queue: added latency, throughput, share of work"

BATCH = {"echo": 32, "mlp": 32}
BACKENDS = ("local", "redis")
COLUMNS = ("function", "backend", "p50_10rps_ms", "p50_1_ms", "p99_1_ms", "rps", "p50_ms", "p99_ms", "cpu_us", "redis_cpu_us",
           "errors")
SHARE_COLUMNS = ("function", "instance", "max_batch_size", "served", "share_pct", "rps", "errors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer bench queue`."""
    parser.add_argument("--functions", default="echo,mlp", help="comma-separated functions (default echo,mlp)")
    parser.add_argument("--duration", type=seconds, default=4.0, help="seconds of load per measurement (default 4)")
    parser.add_argument("--concurrency", type=at_least(1), default=96,
                        help="closed-loop clients for throughput, well above the batch size so the queue never "
                             "runs dry (default 96)")
    parser.add_argument("--share-batches", default="4,32",
                        help="max_batch_size of the two instances sharing a queue (default 4,32)")
    parser.add_argument("--batch-timeout", default="0",
                        help="batch_timeout of every instance (default 0: no waiting for company, so the "
                             "latency measured is the queue's own; '' uses the watchdog's policy)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    """Measure, print the tables, write JSON."""
    from bench.loadgen import print_table

    small, big = (int(b) for b in args.share_batches.split(","))
    rows, shares = [], []
    with PrivateRedis() as server:
        redis_url = server.url
        for function in args.functions.split(","):
            pair = measure(function, server, args)
            rows += pair + [_compare(*pair)]
            shares += share(function, redis_url, (small, big), args)
    print_table(rows, COLUMNS)
    print()
    print_table(shares, SHARE_COLUMNS)
    print("\np50_10rps: latency at 10 req/s (Poisson; from when the load generator sent each request, without "
          "its own timers' lateness), where an idle instance runs a request at once when the "
          "shared queue is empty; p50_1/p99_1: one request at a time back to back, every request through the "
          "queue; rps, p50, p99: closed loop at "
          f"{args.concurrency} clients; cpu_us, redis_cpu_us: CPU microseconds per request of the watchdog and of "
          "redis-server under that load (steadier than rps on a shared machine). The last row of each function "
          "is redis - local (rps: redis / local).")
    if args.json:
        write_json(args.json, {"backends": rows, "share": shares, "duration": args.duration,
                               "concurrency": args.concurrency})
    return 0


def measure(function: str, server: PrivateRedis, args: argparse.Namespace) -> list[dict]:
    """One instance per backend, served side by side and measured in alternating slices (so both see the
    same machine): latency at 10 req/s and at concurrency 1, then throughput at ``concurrency`` with the CPU seconds per
    request that each watchdog and redis-server spent during its own slices."""
    from bench.common import progress, serve
    from bench.loadgen import closed_loop, interleaved, open_loop

    served = [serve(os.path.join("functions", function),
                    _env(function, backend, server.url, f"{backend}-1", BATCH.get(function, 32), args.batch_timeout))
              for backend in BACKENDS]
    try:
        targets = [_target(function, s.url) for s in served]
        for target in targets:
            closed_loop(target, 4, 1.0)  # warm up: first batches, torch kernels, connections
        paced = interleaved(targets, lambda t, s: open_loop(t, 10.0, s), args.duration, slice_seconds=1.0)
        single = interleaved(targets, lambda t, s: closed_loop(t, 1, s), args.duration, slice_seconds=0.25)
        cpu = [[0.0, 0.0] for _ in served]
        last = [_cpu_seconds(s.proc.pid) for s in served] + [_cpu_seconds(server.proc.pid)]

        def account(k: int) -> None:
            now = [_cpu_seconds(s.proc.pid) for s in served] + [_cpu_seconds(server.proc.pid)]
            cpu[k][0] += now[k] - last[k]
            cpu[k][1] += now[-1] - last[-1]
            last[:] = now

        loaded = interleaved(targets, lambda t, s: closed_loop(t, args.concurrency, s), args.duration,
                             slice_seconds=0.5, between=account)
    finally:
        for s in served:
            s.stop()
    rows = []
    for backend, low, one, many, (own, redis_cpu) in zip(BACKENDS, paced, single, loaded, cpu):
        answered = max(many.ok, 1)
        progress(f"{function} {backend}: {one.percentile(50) * 1000:.2f} ms alone, {many.throughput:.0f} rps")
        rows.append({"function": function, "backend": backend, "p50_10rps_ms": _ms(low.served_percentile(50)),
                     "p50_1_ms": _ms(one.percentile(50)),
                     "p99_1_ms": _ms(one.percentile(99)), "rps": round(many.throughput, 1),
                     "p50_ms": _ms(many.percentile(50)), "p99_ms": _ms(many.percentile(99)),
                     "cpu_us": round(own / answered * 1e6), "redis_cpu_us": round(redis_cpu / answered * 1e6),
                     "errors": low.failed + one.failed + many.failed})
    return rows


def share(function: str, redis_url: str, batches: tuple[int, int], args: argparse.Namespace) -> list[dict]:
    """Two Redis instances with different batch sizes, load to the first only: who runs what."""
    import redis

    from bench.common import progress, serve
    from bench.loadgen import closed_loop
    from batcher.stats import read_function_stats

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    names = [f"b{b}" for b in batches]
    instances = [serve(os.path.join("functions", function),
                       _env(function, "redis", redis_url, name, b, args.batch_timeout))
                 for name, b in zip(names, batches)]
    try:
        result = closed_loop(_target(function, instances[0].url), args.concurrency, args.duration)
        time.sleep(1.0)  # one heartbeat, so the served counts are current
        stats = read_function_stats(client, f"bench-{function}", time.time())
    finally:
        for served in instances:
            served.stop()
    counts = {i.instance: i.served for i in stats.instances}
    total = sum(counts.values()) or 1
    progress(f"{function} share: {counts}")
    return [{"function": function, "instance": name + (" (gets the load)" if k == 0 else ""),
             "max_batch_size": b, "served": counts.get(name, 0),
             "share_pct": round(100 * counts.get(name, 0) / total, 1),
             "rps": round(result.throughput, 1) if k == 0 else "", "errors": result.failed if k == 0 else ""}
            for k, (name, b) in enumerate(zip(names, batches))]


def _compare(local: dict, remote: dict) -> dict:
    diff = {k: round(remote[k] - local[k], 2) for k in ("p50_10rps_ms", "p50_1_ms", "p99_1_ms", "p50_ms", "p99_ms", "cpu_us",
                                                          "redis_cpu_us")}
    ratio = round(remote["rps"] / local["rps"], 3) if local["rps"] else 0.0
    return {"function": local["function"], "backend": "redis - local (rps: redis / local)", **diff, "rps": ratio,
            "errors": ""}


def _env(function: str, backend: str, redis_url: str, instance: str, batch: int, timeout: str) -> dict[str, str]:
    return {"batch_backend": backend, "batch_timeout": timeout, "redis_url": redis_url,
            "function_name": f"bench-{function}",
            "instance_id": instance, "max_batch_size": str(batch), "cpu_limit": "1", "http_threads": "128",
            "max_queue": "100000", "LOG_LEVEL": "WARNING"}


def _target(function: str, url: str):
    from bench.common import sample_body
    from bench.loadgen import Target

    body, ctype = sample_body(function)
    return Target(url + "/", body, "POST", (("Content-Type", ctype),))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids = [pid, *(int(c) for c in f.read().split())]
        total = 0
        for p in pids:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)

