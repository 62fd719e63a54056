"""Invoking workers: over HTTP (a worker is an ordinary function behind a URL) or in-process threads."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Mapping, Protocol, Sequence

import requests

from fsd.channel import Channel
from fsd.errors import FsdError, WorkerFailed
from fsd.schedule import WorkerProgram
from fsd.worker import JobSpec, WorkerReport, run_worker

# Extra seconds an HTTP invocation may take beyond the job's own timeout (connection, queueing).
HTTP_GRACE = 3.0
# Calls to one rank left unanswered at once before a new job fails at once instead of opening another
# connection: a rank that hangs must not cost a thread and a socket per job for a whole timeout each.
MAX_OUTSTANDING = 4


class Invoker(Protocol):
    """Starts one rank's part of a job."""

    def submit(self, spec: JobSpec) -> "Future[WorkerReport]":
        """A future that ends with the worker's report or a ``WorkerFailed``."""


class HttpInvoker:
    """POSTs the job spec to each rank's function URL, concurrently, each call on a thread of its own.

    No pool: a call that hangs (a blackholed connection) holds its thread until the job's timeout plus
    ``HTTP_GRACE``, long after its job has failed, and must not hold up the next job's calls. Past
    ``MAX_OUTSTANDING`` unanswered calls to one rank, a new job's call to it fails at once.
    """

    def __init__(self, urls: Sequence[str], session: requests.Session | None = None,
                 max_outstanding: int = MAX_OUTSTANDING) -> None:
        self.urls = list(urls)
        self.max_outstanding = max_outstanding
        self.session = session or _session(len(self.urls), len(self.urls) * max_outstanding)
        self._outstanding = [0] * len(self.urls)
        self._lock = threading.Lock()

    def submit(self, spec: JobSpec) -> "Future[WorkerReport]":
        """Invoke ``spec.rank``'s URL (a failed future at once when too many calls to it are unanswered)."""
        future: Future[WorkerReport] = Future()
        with self._lock:
            busy = self._outstanding[spec.rank]
            if busy < self.max_outstanding:
                self._outstanding[spec.rank] += 1
        if busy >= self.max_outstanding:
            future.set_exception(WorkerFailed(
                f"rank {spec.rank} at {self.urls[spec.rank]}: {busy} calls still unanswered (hung?): "
                f"not invoked again until one ends"))
            return future
        threading.Thread(target=self._run, args=(future, spec), name=f"fsd-invoke-{spec.rank}", daemon=True).start()
        return future

    def _run(self, future: "Future[WorkerReport]", spec: JobSpec) -> None:
        try:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._call(spec))
            except BaseException as exc:  # noqa: BLE001 - the future carries it to the coordinator
                future.set_exception(exc)
        finally:
            with self._lock:
                self._outstanding[spec.rank] -= 1

    def _call(self, spec: JobSpec) -> WorkerReport:
        url = self.urls[spec.rank]
        try:
            response = self.session.post(url, data=spec.to_json(), timeout=spec.timeout + HTTP_GRACE,
                                         headers={"Content-Type": "application/json",
                                                  "X-Timeout": f"{spec.timeout + HTTP_GRACE:g}"})
        except requests.Timeout:
            raise WorkerFailed(f"rank {spec.rank} at {url}: no answer within {spec.timeout + HTTP_GRACE:g}s") from None
        except requests.RequestException as exc:
            raise WorkerFailed(f"rank {spec.rank} at {url}: unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise WorkerFailed(f"rank {spec.rank} at {url}: HTTP {response.status_code}: {response.text.strip()[:300]}")
        try:
            return WorkerReport.from_json(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkerFailed(f"rank {spec.rank} at {url}: unreadable report: {exc}") from None


def _session(hosts: int, connections: int) -> requests.Session:
    """A session keeping up to ``connections`` connections to each of up to ``hosts`` hosts: every rank's
    calls may go to one gateway (requests keeps 10 a host, so W > 10 reopened and discarded connections on
    every job, with a warning each), or each to a host of its own."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=max(10, hosts), pool_maxsize=max(10, connections))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class LocalInvoker:
    """Runs each rank's program on a thread of this process (benchmarks and unit tests)."""

    def __init__(self, programs: Mapping[int, WorkerProgram], channel: Channel) -> None:
        self.programs = dict(programs)
        self.channel = channel
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.programs)), thread_name_prefix="fsd-worker")

    def submit(self, spec: JobSpec) -> "Future[WorkerReport]":
        """Run ``spec.rank``'s program on a thread."""
        return self.pool.submit(self._call, spec)

    def _call(self, spec: JobSpec) -> WorkerReport:
        program = self.programs.get(spec.rank)
        if program is None:
            raise WorkerFailed(f"rank {spec.rank}: no such worker")
        try:
            return run_worker(program, self.channel, spec)
        except FsdError as exc:
            text = str(exc)
            raise WorkerFailed(text if text.startswith(f"rank {spec.rank}:") else f"rank {spec.rank}: {text}") from None
