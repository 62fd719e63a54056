"""Batching benchmark: each example function served (a) with batching, (b) with max_batch_size=1 (one
request per call, as OpenFaaS does today), and (c) in-process at its best batch size with no HTTP.

For (a) and (b) an open-loop Poisson load rises until p99 exceeds the function's SLO or any request fails;
the last passing rate is bisected. A rate counts as over only after ``--tries`` runs of it failed, and the
in-process limit is measured before and after the served runs with the best kept: this VM's speed changes
by up to 1.85x in stretches of seconds, and one run in a slow stretch used to decide a row. The no-op function (functions/echo) gives the load generator's and
HTTP's own ceiling in the same run, two ways: closed-loop throughput (no latency bound) and, like the
functions, the highest Poisson rate within the tightest SLO; both ratios are printed.

The batched instance is served at the batch size that gives the in-process limit (``--max-batch-size best``):
the highest items/s among the batch sizes whose call takes at most half the SLO (INFless's rule for b > 1,
the one the autoscaler plans with), so the served and in-process figures compare at one batch size.

On a 2-core machine the served instance gets one core (cpu_limit=1, so one torch thread) and the load
generator the other; the in-process limit is measured with one torch thread too, so the three compare.
"""

from __future__ import annotations

import argparse
import os
import time

from bench._argtypes import at_least, seconds

HELP = "batched vs unbatched vs in-process throughput at the SLO for the example functions"

FUNCTIONS = {"mlp": 0.050, "lstm": 0.100, "textcnn": 0.100, "resnet": 0.200}
# max_batch_size of each example in stack.yml (--max-batch-size stack).
BATCH = {"mlp": 32, "lstm": 32, "textcnn": 16, "resnet": 4}
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer bench batching`."""
    parser.add_argument("--functions", default=",".join(FUNCTIONS),
                        help="comma-separated example functions to measure (default: all four)")
    parser.add_argument("--duration", type=seconds, default=3.0, help="seconds of load per rate step (default 3)")
    parser.add_argument("--bisect", type=at_least(0), default=3,
                        help="bisection steps after the first failure (default 3)")
    parser.add_argument("--tries", type=at_least(1), default=2,
                        help="runs of a rate before it counts as over the SLO, and measurements of the in-process "
                             "limit (the best is kept); 2 outvotes one slow stretch of this shared machine "
                             "(default 2; 1 measures each once)")
    parser.add_argument("--max-batch-size", default="best", type=_batch_choice,
                        help="max_batch_size of the batched instance: 'best' the batch size of the in-process "
                             "limit (the most items/s among 1..64 with a call within half the SLO), 'stack' the "
                             "value in stack.yml, or a number for every function (default best)")
    parser.add_argument("--http-engine", choices=("asyncio", "gthread"), default="asyncio",
                        help="the watchdog's HTTP engine for every served run, no-op included (default asyncio)")
    parser.add_argument("--handler-process", choices=("stack", "off", "on", "both"), default="stack",
                        help="where the batched instance runs the handler: 'stack' as each function's "
                             "handler_process in stack.yml says (a child process for the MLP), 'off' in the "
                             "watchdog's process, 'on' in a child process (the unbatched run too), 'both' a "
                             "batched run each way, the second as an extra row, so the two compare in one run. "
                             "The no-op and, except with 'on', the unbatched run keep the handler in-process "
                             "(default stack)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="draw p99 latency versus offered rate to FILE.png")


def _batch_choice(value: str) -> str:
    if value in ("best", "stack") or (value.isdigit() and int(value) >= 1):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: must be 'best', 'stack' or an integer >= 1")


def served_batch(choice: str, function: str, best_b: int) -> int:
    """max_batch_size of the batched instance for ``--max-batch-size`` ``choice``."""
    if choice == "best":
        return best_b
    return BATCH.get(function, 8) if choice == "stack" else int(choice)


def stack_child(function: str) -> bool:
    """The function's ``handler_process`` in stack.yml, read as the watchdog reads its environment."""
    from bench.common import REPO
    from faas_infer.stack import load_stack
    from watchdog.config import WatchdogConfig

    spec = load_stack(os.path.join(REPO, "stack.yml"), os.environ).functions.get(function)
    return spec is not None and WatchdogConfig.from_env(spec.environment).handler_process


def _in_process_handler(function: str):
    """The example's handler loaded in this process as the served instance runs it: freed memory kept,
    one torch thread (one core for it, one for the load generator)."""
    from bench.common import REPO
    from faas_infer.memory import retain_freed_memory
    from watchdog.handler import load_handler

    retain_freed_memory()
    handler = load_handler(os.path.join(REPO, "functions", function))
    import torch

    torch.set_num_threads(1)
    return handler


def in_process_limit(function: str, handler, slo: float, seconds: float = 1.0) -> tuple[float, int, float]:
    """(best items/s, its batch size, single-request seconds) of the handler called directly; batch sizes
    whose call takes more than half of ``slo`` do not count (b = 1 always does)."""
    from batcher import Request
    from bench.common import sample_body

    best, best_b, single = 0.0, 1, 0.0
    for b in BATCH_SIZES:
        reqs = []
        for i in range(b):
            body, ctype = sample_body(function, i)
            reqs.append(Request(body=body, headers={"Content-Type": ctype}))
        handler.handle(reqs)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            handler.handle(reqs)
            n += 1
        per_call = (time.perf_counter() - start) / n
        if b == 1:
            single = per_call
        if b / per_call > best and (b == 1 or per_call <= slo / 2):
            best, best_b = b / per_call, b
    return best, best_b, single


def in_process_paced(function: str, handler, rate: float = 10.0, calls: int = 30) -> float:
    """Median seconds of one request called in-process at ``rate`` calls per second, the pace of the
    low-load measurement: between calls the caches go cold, so a single request takes longer than back
    to back, and the watchdog's added latency is taken against this."""
    from batcher import Request
    from bench.common import sample_body

    body, ctype = sample_body(function)
    reqs = [Request(body=body, headers={"Content-Type": ctype})]
    times = []
    for _ in range(calls + 3):
        start = time.perf_counter()
        handler.handle(reqs)
        times.append(time.perf_counter() - start)
        time.sleep(1.0 / rate)
    times = sorted(times[3:])
    return times[len(times) // 2]


def step(target, rate: float, duration: float, slo: float, tries: int = 2):
    """Run one rate, again if it failed (up to ``tries`` runs); returns (passed, result, runs).

    This machine's speed changes by up to 1.85x in stretches of seconds (bench cop's notes): one run in a
    slow stretch would otherwise decide the whole bisection. A rate counts as sustained when any of its
    runs held; the in-process limit it is compared with is likewise the best of its measurements.
    """
    from bench.loadgen import open_loop

    for run in range(1, tries + 1):
        result = open_loop(target, rate, duration, seed=int(rate) + run - 1)
        if result.failed == 0 and result.percentile(99) <= slo:
            return True, result, run
    return False, result, tries


def max_rate_at_slo(target, slo: float, start: float, duration: float, bisect: int, trace: list, tries: int = 2):
    """Rise by 1.5x until failure, then bisect; returns (rate, result at that rate)."""
    from bench.common import progress

    def attempt(rate: float):
        ok, result, runs = step(target, rate, duration, slo, tries)
        trace.append((rate, result.percentile(99), ok))
        progress(f"{rate:8.1f} rps  p99 {result.percentile(99) * 1000:7.1f} ms  failed {result.failed}  "
                 f"{'ok' if ok else 'over'}{f' (run {runs})' if runs > 1 else ''}")
        return ok, result

    best, best_result, rate, failed_at = 0.0, None, start, None
    while failed_at is None and rate < 50_000:
        ok, result = attempt(rate)
        if ok:
            best, best_result, rate = rate, result, rate * 1.5
        else:
            failed_at = rate
    lo, hi = best, failed_at or rate
    for _ in range(bisect):
        mid = (lo + hi) / 2
        ok, result = attempt(mid)
        if ok:
            lo, best, best_result = mid, mid, result
        else:
            hi = mid
    return best, best_result


def measure_served(function: str, mode: str, slo: float, start: float, args, traces: dict, batch: int = 1,
                   child: bool = False) -> dict:
    """Serve ``function`` in ``mode`` at ``max_batch_size=batch`` (the handler in a child process when
    ``child``) and find its highest rate within the SLO."""
    from bench.common import progress, sample_body, serve
    from bench.loadgen import Target, closed_loop, open_loop

    env = {"max_batch_size": str(batch), "latency_slo": f"{slo}", "exec_timeout": "10s", "cpu_limit": "1",
           "http_engine": args.http_engine, "handler_process": "true" if child else "false"}
    served = serve(os.path.join("functions", function), env)
    try:
        body, ctype = sample_body(function)
        target = Target(served.url + "/", body, headers=(("Content-Type", ctype),))
        closed_loop(target, 8, 1.0)  # warm up the model and the execution-time fit
        row = {"function": function, "mode": mode, "max_batch_size": batch, "handler_process": child}
        if mode.startswith("batched"):
            time.sleep(3.0)  # let the arrival-rate estimate forget the warm-up burst
            before = _exec_totals(served.metrics_url)
            low = open_loop(target, 10, max(4.0, args.duration), seed=1)
            after = _exec_totals(served.metrics_url)
            # from when each request was sent: the generator's timers wake up ~1 ms late at 10 req/s
            row["low_load_p50_ms"] = round(low.served_percentile(50) * 1000, 2)
            batches = after[1] - before[1]
            row["low_load_exec_ms"] = round((after[0] - before[0]) / batches * 1000, 2) if batches else None
        progress(f"{function} {mode} (max_batch_size={batch}): ramping from {start:.0f} rps (SLO {slo * 1000:.0f} ms)")
        trace: list = []
        rate, result = max_rate_at_slo(target, slo, start, args.duration, args.bisect, trace, args.tries)
        traces[(function, mode)] = trace
        row.update(max_rps_at_slo=round(rate, 1),
                   p50_ms=round(result.percentile(50) * 1000, 2) if result else None,
                   p99_ms=round(result.percentile(99) * 1000, 2) if result else None,
                   errors=result.failed if result else None)
        return row
    finally:
        served.stop()


def _exec_totals(metrics_url: str) -> tuple[float, float]:
    """(seconds, calls) of handle_batch so far, from the watchdog's own metrics."""
    from ops.scrape import scrape, select

    samples = scrape(metrics_url)
    return (sum(s.value for s in select(samples, "faas_infer_batch_exec_seconds_sum")),
            sum(s.value for s in select(samples, "faas_infer_batch_exec_seconds_count")))


def noop_ceilings(args, slo: float, traces: dict) -> list[dict]:
    """The load generator + HTTP ceiling against the no-op function, measured two ways: closed-loop
    throughput (no latency bound), and the highest Poisson rate with p99 within ``slo``, as the functions
    are measured (the like-for-like ceiling)."""
    from bench.common import progress, sample_body, serve
    from bench.loadgen import Target, closed_loop

    served = serve("functions/echo", {"max_batch_size": "1", "cpu_limit": "1", "http_engine": args.http_engine})
    try:
        body, ctype = sample_body("echo")
        target = Target(served.url + "/", body, headers=(("Content-Type", ctype),))
        result = closed_loop(target, 32, max(3.0, args.duration))
        closed = {"function": "echo", "mode": "no-op closed loop", "max_rps_at_slo": round(result.throughput, 1),
                  "p50_ms": round(result.percentile(50) * 1000, 2), "p99_ms": round(result.percentile(99) * 1000, 2),
                  "errors": result.failed}
        progress(f"echo: ramping from {0.3 * result.throughput:.0f} rps (SLO {slo * 1000:.0f} ms)")
        trace: list = []
        rate, at_slo = max_rate_at_slo(target, slo, 0.3 * result.throughput, args.duration, args.bisect, trace,
                                       args.tries)
        traces[("echo", "no-op")] = trace
        open_row = {"function": "echo", "mode": f"no-op at {slo * 1000:.0f} ms", "max_rps_at_slo": round(rate, 1),
                    "p50_ms": round(at_slo.percentile(50) * 1000, 2) if at_slo else None,
                    "p99_ms": round(at_slo.percentile(99) * 1000, 2) if at_slo else None,
                    "errors": at_slo.failed if at_slo else None}
        return [closed, open_row]
    finally:
        served.stop()


def run(args: argparse.Namespace) -> int:
    """Measure, print the table and the ratios, write JSON and the plot."""
    from bench.common import progress
    from bench.loadgen import print_table

    if args.tries < 1:
        print(f"--tries={args.tries}: must be >= 1")
        return 2
    functions = [f for f in args.functions.split(",") if f]
    unknown = set(functions) - set(FUNCTIONS)
    if unknown:
        print(f"unknown functions: {', '.join(sorted(unknown))} (choose from {', '.join(FUNCTIONS)})")
        return 2
    traces: dict = {}
    progress("no-op ceilings (closed loop, 32 connections; then open loop within the tightest SLO)")
    ceilings = noop_ceilings(args, min(FUNCTIONS[f] for f in functions), traces)
    closed_ceiling, slo_ceiling = (c["max_rps_at_slo"] for c in ceilings)
    rows, summary = list(ceilings), []
    for function in functions:
        slo = FUNCTIONS[function]
        progress(f"{function}: in-process limit")
        handler = _in_process_handler(function)
        limit, best_b, single = in_process_limit(function, handler, slo)
        paced = in_process_paced(function, handler)
        start = max(20.0, 0.15 * min(limit, closed_ceiling))
        on = args.handler_process == "on"
        child = on or (args.handler_process in ("stack", "both") and stack_child(function))
        served_b = served_batch(args.max_batch_size, function, best_b)
        batched = measure_served(function, "batched", slo, start, args, traces, served_b, child=child)
        extra = []
        if args.handler_process == "both":
            other = "batched, handler in-process" if child else "batched, handler process"
            extra.append(measure_served(function, other, slo, start, args, traces, served_b, child=not child))
        unbatched = measure_served(function, "unbatched", slo, max(10.0, start / 3), args, traces, child=on)
        limits = [limit]
        for _ in range(args.tries - 1):  # again after the served runs: the best the machine showed is the limit
            progress(f"{function}: in-process limit again")
            again = in_process_limit(function, handler, slo)
            limits.append(again[0])
            if again[0] > limit:
                limit, best_b, single = again
        rows += [{"function": function, "mode": "in-process", "max_rps_at_slo": round(limit, 1),
                  "p50_ms": round(single * 1000, 2), "p99_ms": None, "errors": 0, "best_batch": best_b,
                  "low_load_p50_ms": round(paced * 1000, 2), "in_process_runs": [round(x, 1) for x in limits]},
                 batched, *extra, unbatched]
        summary.append({"function": function, "slo_ms": slo * 1000,
                        "batched/unbatched": round(batched["max_rps_at_slo"] / max(unbatched["max_rps_at_slo"], 1e-9), 2),
                        "batched/min(in-process,no-op closed)":
                            round(batched["max_rps_at_slo"] / min(limit, closed_ceiling), 2),
                        "batched/min(in-process,no-op at SLO)":
                            round(batched["max_rps_at_slo"] / max(min(limit, slo_ceiling), 1e-9), 2),
                        "added_p50_ms_low_load": round(batched["low_load_p50_ms"] - paced * 1000, 2),
                        "watchdog_p50_ms_low_load": round(batched["low_load_p50_ms"]
                                                          - (batched["low_load_exec_ms"] or 0), 2)})
        summary[-1]["handler"] = "child process" if child else "in-process"
        if extra:
            pair = (batched, extra[0]) if child else (extra[0], batched)
            summary[-1]["handler process/in-process (batched)"] = round(
                pair[0]["max_rps_at_slo"] / max(pair[1]["max_rps_at_slo"], 1e-9), 2)
    print()
    print_table(rows, ["function", "mode", "max_rps_at_slo", "p50_ms", "p99_ms", "errors", "best_batch", "max_batch_size",
                       "low_load_p50_ms", "low_load_exec_ms"])
    print()
    print_table(summary, ["function", "slo_ms", "handler", "batched/unbatched", "batched/min(in-process,no-op closed)",
                          "batched/min(in-process,no-op at SLO)", "added_p50_ms_low_load", "watchdog_p50_ms_low_load"]
                + (["handler process/in-process (batched)"] if args.handler_process == "both" else []))
    print("\nadded_p50: low-load p50 over HTTP (10 req/s, counted from when the load generator sent each request, "
          "not when it was due: its own timers wake up about 1 ms late at this pace) minus the handler's p50 "
          "in-process at the same pace;"
          "\nwatchdog_p50: minus the handler's time inside the watchdog at that load (what the watchdog adds).")
    if args.json:
        from bench.common import write_json

        write_json(args.json, {"rows": rows, "summary": summary})
    if args.plot:
        _plot(traces, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _plot(traces: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({f for f, _ in traces if f != "echo"})
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for mode, style in (("batched", "o-"), ("batched, handler process", "^-."),
                            ("batched, handler in-process", "v-."), ("unbatched", "s--")):
            points = sorted(traces.get((name, mode), []))
            if points:
                ax.plot([p[0] for p in points], [min(p[1], 10) * 1000 for p in points], style, label=mode)
        ax.axhline(FUNCTIONS[name] * 1000, color="grey", lw=0.8, ls=":", label="SLO")
        ax.set(title=name, xlabel="offered rate (req/s)", ylabel="p99 latency (ms)", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
