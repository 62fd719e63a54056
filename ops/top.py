"""faas-infer top: per function, requests per second, errors, p50/p99 latency against the SLO and the share
of requests within it (answered 2xx within the SLO, as the autoscaler counts it), the autoscaler's demand,
queue depth, replicas, instances by configuration (``b4-c1000-g0x2``: batch 4, 1000 millicores, no GPU, two
instances), allocated CPU/GPU, and the last decision.

Figures come from the gateway's metrics (the local provider's <gateway>/metrics, or --metrics-url: the
OpenFaaS gateway serves them on port 8082 only) and the autoscaler's /metrics, or, with --prometheus, from
a Prometheus that scrapes them. Only functions the gateway lists (``/system/functions`` in each of its
``/system/namespaces``) are shown: the metrics also name unknown functions (a call to ``/function/nope``)
and deleted ones, as the gateway's do. Rates and latencies are over the refresh interval (two readings, so --once
waits one interval). Output is plain text, one frame per interval; --clear redraws in place with an ANSI
clear for terminals that support it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TextIO

import requests

from autoscaler.attainment import attainment_from
from ops import scrape
from ops.scrape import Sample
from ops.targets import read_auth

HELP = "live terminal view of demand, queue depth, instances by config and latency vs SLO"

A = "faas_infer_autoscaler_"
SELECTOR = '{__name__=~"gateway_function_invocation_total|gateway_functions_seconds_bucket|' \
           'gateway_service_count|faas_infer_autoscaler_.*"}'
# Namespace of a listed function that names none (OpenFaaS's default).
DEFAULT_NAMESPACE = "openfaas-fn"
# Codes that count as answered, as attainment.QUERY's label_replace marks them (the regex is anchored).
OK_CODE = re.compile(r"2..")
# Longest --interval: a day.
MAX_INTERVAL = 86400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``faas-infer top``."""
    parser.add_argument("--gateway", default=os.environ.get("OPENFAAS_URL", "http://127.0.0.1:8080"),
                        help="gateway or provider base URL; its /metrics is read unless --metrics-url says "
                             "otherwise (default $OPENFAAS_URL, else http://127.0.0.1:8080)")
    parser.add_argument("--metrics-url", default="",
                        help="where the gateway's metrics are read: faas-infer's provider serves them at "
                             "<gateway>/metrics, the OpenFaaS gateway only on its port 8082 (e.g. "
                             "http://127.0.0.1:8082/metrics) (default <gateway>/metrics)")
    parser.add_argument("--autoscaler", default="http://127.0.0.1:8082/metrics",
                        help="the autoscaler's metrics URL (default %(default)s)")
    parser.add_argument("--prometheus", default="",
                        help="read everything from this Prometheus instead (e.g. http://127.0.0.1:9090)")
    parser.add_argument("--secret-mount-path", default="",
                        help="folder with basic-auth-user/-password, to list the gateway's functions when its "
                             "basic auth is on")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between frames (default 2)")
    parser.add_argument("--once", action="store_true", help="print one frame (after one interval) and exit")
    parser.add_argument("--clear", action="store_true", help="clear the screen before each frame (ANSI)")


@dataclass(frozen=True)
class Row:
    """One function's line of the view."""

    function: str
    rps: float | None
    error_ratio: float | None
    p50: float | None
    p99: float | None
    slo: float | None
    attainment: float | None
    demand: float | None
    queue: float | None
    replicas: float | None
    instances: str
    cpu: float | None
    gpu: float | None
    decision: str


@dataclass(frozen=True)
class Frame:
    """Everything one refresh shows."""

    rows: tuple[Row, ...]
    plan: str
    decision_seconds: float | None
    problems: tuple[str, ...]


def _one(samples: Iterable[Sample], name: str, fn: str) -> float | None:
    found = scrape.select(samples, name, function_name=fn)
    return sum(s.value for s in found) if found else None


def _sum_total(samples: Iterable[Sample], fn: str, ok: Callable[[str], bool] = lambda code: True) -> float:
    return sum(s.value for s in scrape.select(samples, "gateway_function_invocation_total", function_name=fn)
               if ok(s.label("code")))


def _delta(now: float, before: float) -> float:
    return now if now < before else now - before


def _buckets_by_ok(samples: Iterable[Sample], fn: str, ok: bool) -> dict[float, float]:
    return scrape.buckets([s for s in samples if bool(OK_CODE.fullmatch(s.label("code"))) == ok],
                          "gateway_functions_seconds", function_name=fn)


def _attainment(now: tuple[Sample, ...], before: tuple[Sample, ...], fn: str, slo: float) -> float | None:
    """Share of the calls between two readings answered 2xx within ``slo``: the autoscaler's own arithmetic
    (``attainment_from``) over the vector its query gives for this interval; None without calls."""
    results = []
    for ok in (True, False):
        counts = scrape.bucket_delta(_buckets_by_ok(now, fn, ok), _buckets_by_ok(before, fn, ok))
        results += [{"metric": {"function_name": fn, "le": str(le), **({"ok": "1"} if ok else {})},
                     "value": [0, n]} for le, n in counts.items()]
    return attainment_from(results, {fn: slo}, namespace="").get(fn)


def build_frame(now: tuple[Sample, ...], before: tuple[Sample, ...], seconds: float,
                problems: tuple[str, ...] = ()) -> Frame:
    """The view from two readings ``seconds`` apart (pure: tests pass fixed samples)."""
    names = sorted({s.label("function_name") for s in now
                    if s.label("function_name") and (s.name.startswith("gateway_") or s.name.startswith(A))},
                   key=lambda label: (label.rpartition(".")[0] or label, label))  # by name: "f" before "f-x"
    rows = []
    for fn in names:
        total = _delta(_sum_total(now, fn), _sum_total(before, fn))
        errors = _delta(_sum_total(now, fn, lambda c: not c.startswith("2")),
                        _sum_total(before, fn, lambda c: not c.startswith("2")))
        counts = scrape.bucket_delta(scrape.buckets(now, "gateway_functions_seconds", function_name=fn),
                                     scrape.buckets(before, "gateway_functions_seconds", function_name=fn))
        slo = _one(now, A + "slo_seconds", fn)
        attainment = _one(now, A + "slo_attainment_ratio", fn)
        if slo and counts:
            attainment = _attainment(now, before, fn, slo)
        by_config: dict[str, int] = {}
        for s in scrape.select(now, A + "instances", function_name=fn):  # the deployment and variants together
            by_config[s.label("config")] = by_config.get(s.label("config"), 0) + int(s.value)
        configs = sorted((k, n) for k, n in by_config.items() if n > 0)
        decision = next((f"{s.label('action')}: {s.label('reason')}" for s in
                         scrape.select(now, A + "last_decision_info", function_name=fn)), "")
        rows.append(Row(fn, total / seconds if seconds > 0 else None, errors / total if total else None,
                        scrape.quantile(0.5, counts), scrape.quantile(0.99, counts), slo, attainment,
                        _one(now, A + "demand_rps", fn), _one(now, A + "queue_depth", fn),
                        _one(now, "gateway_service_count", fn), " ".join(f"{k}x{n}" for k, n in configs),
                        _one(now, A + "allocated_cpu_cores", fn), _one(now, A + "allocated_gpus", fn), decision))
    plan = next((f"solver {s.label('solver')} ({s.label('status')})" for s in scrape.select(now, A + "plan_info")), "")
    sums = [scrape.select(x, A + "decision_seconds_sum") for x in (now, before)]
    counts_ = [scrape.select(x, A + "decision_seconds_count") for x in (now, before)]
    decision_seconds = None
    if sums[0] and counts_[0]:
        n = counts_[0][0].value - (counts_[1][0].value if counts_[1] else 0.0)
        s = sums[0][0].value - (sums[1][0].value if sums[1] else 0.0)
        decision_seconds = s / n if n > 0 else sums[0][0].value / max(1.0, counts_[0][0].value)
    return Frame(tuple(rows), plan, decision_seconds, problems)


def deployed_only(samples: Iterable[Sample], functions: frozenset[str]) -> tuple[Sample, ...]:
    """``samples`` without the series of functions not in ``functions`` (``name.namespace``; a bare label
    matches that name in any namespace); series of no function (the plan) are kept."""
    bare = {f.rpartition(".")[0] for f in functions}
    return tuple(s for s in samples
                 if not s.label("function_name") or s.label("function_name") in functions
                 or s.label("function_name") in bare)


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


COLUMNS = ("FUNCTION", "RPS", "ERR", "P50", "P99", "SLO", "IN SLO", "DEMAND", "QUEUE", "REPL", "CPU", "GPU",
           "INSTANCES")


def _printable(text: str) -> str:
    """``text`` with control characters shown escaped: function names come from request paths, and a
    URL-encoded newline or ESC in one broke the table or reached the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render(frame: Frame, stamp: str = "") -> str:
    """The frame as plain text: a header, one line per function, the decisions, any problems."""
    table = [COLUMNS]
    for r in frame.rows:
        table.append((_printable(r.function.removesuffix(".openfaas-fn")), _num(r.rps), _pct(r.error_ratio), _ms(r.p50),
                      _ms(r.p99), _ms(r.slo), _pct(r.attainment), _num(r.demand), _num(r.queue, "{:.0f}"),
                      _num(r.replicas, "{:.0f}"), _num(r.cpu, "{:.2f}"), _num(r.gpu, "{:.2f}"),
                      r.instances or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [f"faas-infer top  {stamp}".rstrip()]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    if not frame.rows:
        lines.append("(no functions yet)")
    decisions = [(r.function.removesuffix(".openfaas-fn"), r.decision) for r in frame.rows if r.decision]
    if frame.plan or frame.decision_seconds is not None:
        lines.append(f"autoscaler: {frame.plan or '-'}, decision {_ms(frame.decision_seconds)}")
    for name, decision in decisions:
        lines.append(f"  {name}: {decision}")
    for problem in frame.problems:
        lines.append(f"! {problem}")
    return "\n".join(lines) + "\n"


class Reader:
    """Takes one reading of every source; a source that fails becomes a problem line, not an error."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def read(self) -> tuple[tuple[Sample, ...], tuple[str, ...]]:
        samples, problems = self._prometheus() if self.args.prometheus else self._metrics()
        if not any(s.label("function_name") for s in samples):
            return samples, problems
        functions, problem = self._functions()
        if functions is None:
            return samples, problems + (problem,)
        return deployed_only(samples, functions), problems

    def _prometheus(self) -> tuple[tuple[Sample, ...], tuple[str, ...]]:
        try:
            return scrape.query_samples(self.args.prometheus, SELECTOR), ()
        except (requests.RequestException, ValueError, KeyError) as exc:
            return (), (f"prometheus {self.args.prometheus}: {exc}",)

    def _functions(self) -> tuple[frozenset[str] | None, str]:
        """``name.namespace`` of every function the gateway lists, or None and why it could not be read."""
        base = self.args.gateway.rstrip("/")
        auth = read_auth(getattr(self.args, "secret_mount_path", ""))
        try:
            spaces = requests.get(base + "/system/namespaces", auth=auth, timeout=5)
            namespaces = spaces.json() if spaces.status_code == 200 else [""]  # "": the gateway's default
            found = set()
            for namespace in namespaces or [""]:
                listed = requests.get(base + "/system/functions", params={"namespace": namespace} if namespace
                                      else {}, auth=auth, timeout=5)
                listed.raise_for_status()
                found |= {f"{fn['name']}.{fn.get('namespace') or namespace or DEFAULT_NAMESPACE}"
                          for fn in listed.json()}
            return frozenset(found), ""
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError) as exc:
            unauthorized = isinstance(exc, requests.HTTPError) and getattr(exc.response, "status_code", 0) == 401
            return None, (f"functions {base}/system/functions: {type(exc).__name__}"
                          f"{'; pass --secret-mount-path' if unauthorized else ''} (every name in the metrics shown)")

    def _metrics(self) -> tuple[tuple[Sample, ...], tuple[str, ...]]:
        samples: list[Sample] = []
        problems = []
        gateway = self.args.metrics_url or self.args.gateway.rstrip("/") + "/metrics"
        for what, url in (("gateway", gateway), ("autoscaler", self.args.autoscaler)):
            if not url or (what == "autoscaler" and url.rstrip("/") == gateway.rstrip("/")):
                continue  # one endpoint read twice counted every request twice
            try:
                samples.extend(scrape.scrape(url))
            except (requests.RequestException, ValueError) as exc:
                problems.append(f"{what} {url}: {type(exc).__name__}")
        return tuple(samples), tuple(problems)


def loop(reader: Reader, out: TextIO, interval: float, frames: int | None, clear: bool,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
    """Print ``frames`` frames (None: until interrupted), each over ``interval`` seconds."""
    before, _ = reader.read()
    then = clock()
    shown = 0
    while frames is None or shown < frames:
        sleep(interval)
        now, problems = reader.read()
        at = clock()
        frame = build_frame(now, before, at - then, problems)
        if clear:
            out.write("\x1b[H\x1b[2J")
        out.write(render(frame, time.strftime("%H:%M:%S")))
        if not clear:
            out.write("\n")
        out.flush()
        before, then = now, at
        shown += 1


def run(args: argparse.Namespace) -> int:
    """Print frames until Ctrl-C (or one with --once)."""
    if not 0 < args.interval <= MAX_INTERVAL:  # nan and inf reached sleep() and ended in a traceback
        print(f"faas-infer top: --interval={args.interval}: must be > 0 and at most {MAX_INTERVAL:g} seconds",
              file=sys.stderr)
        return 2
    loop(Reader(args), sys.stdout, args.interval, 1 if args.once else None, args.clear)
    return 0
