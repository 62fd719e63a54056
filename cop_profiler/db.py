"""The profile DB: one SQLite file of operator timings keyed by signature, batch, threads, device and hardware.

Torch-free. Default path ``.faas-infer/profiles.sqlite`` under the current directory (``--db`` overrides).
Tables: ``operators`` (signature per key), ``timings`` (median seconds per operator x hardware x device x
batch x threads, with IQR and a noise flag), ``models`` (each model's operator graph as JSON, so the
predictor never needs torch) and ``overheads`` (per-hardware calibrations such as a module call's cost);
``schema`` creates, checks and upgrades them.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import threading
import time
from dataclasses import dataclass

from cop_profiler.errors import NoProfileError, ProfileDBError
from cop_profiler.graph import OpGraph
from cop_profiler.opspec import OperatorSpec
from cop_profiler.schema import open_checked
from faas_infer.paths import PROFILE_DB

DEFAULT_DB_PATH = PROFILE_DB


def normalize_ref(model_ref: str) -> str:
    """Canonical spelling of a model reference: ``functions/mlp/`` and ``./functions/mlp`` are one model."""
    if ":" in model_ref and not os.path.isdir(model_ref):
        return model_ref.strip()
    return os.path.normpath(model_ref).replace(os.sep, "/")


def profile_command(model_ref: str, db_path: str) -> str:
    """The ``faas-infer profile`` command line that fills ``db_path`` with ``model_ref``, for hints in errors."""
    # Without --db the command would fill the default DB, and the caller reading db_path would fail again.
    same = os.path.abspath(db_path) == os.path.abspath(DEFAULT_DB_PATH)
    return f"faas-infer profile {shlex.quote(model_ref)}" + ("" if same else f" --db {shlex.quote(db_path)}")


def _absolute(folder: str) -> str:
    return os.path.abspath(folder).replace(os.sep, "/")


def _store_keys(model_ref: str) -> list[str]:
    """Keys a model is stored under: its normalized reference and, for a folder, its absolute path too."""
    ref = normalize_ref(model_ref)
    return [ref, _absolute(model_ref)] if os.path.isdir(model_ref) and _absolute(model_ref) != ref else [ref]


def _lookup_keys(model_ref: str) -> list[str]:
    """Keys to look a model up by: a folder that exists here by its absolute path first (two projects'
    ``m`` folders profiled into one DB share the relative key, which holds the later one), then as written
    (a reference read elsewhere, e.g. from a function's annotation)."""
    ref = normalize_ref(model_ref)
    if ":" in ref and not os.path.isdir(model_ref):
        return [ref]
    return [_absolute(ref), ref] if os.path.isdir(model_ref) else [ref, _absolute(ref)]


def _same_graph(stored: str, graph: OpGraph) -> bool:
    """True when a stored graph's nodes, operators and module calls are ``graph``'s (notes may differ)."""
    try:
        old = OpGraph.from_json(stored)
    except (ValueError, KeyError, TypeError, IndexError):
        return False
    return (old.nodes, old.ops, old.containers, old.schedule) == (graph.nodes, graph.ops, graph.containers,
                                                                   graph.schedule)


@dataclass(frozen=True)
class Timing:
    """One operator's measurement at one configuration."""

    # Median seconds per call.
    seconds: float
    # Interquartile range of the per-call seconds.
    iqr: float = 0.0
    # True when IQR/median exceeded the noise threshold.
    noisy: bool = False


class ProfileDB:
    """Access to one profile DB file; creates it (and its folder) on first use, unless opened ``readonly``."""

    def __init__(self, path: str = DEFAULT_DB_PATH, readonly: bool = False) -> None:
        self.path = path
        try:
            self._conn = open_checked(path, readonly)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise ProfileDBError(f"{path}: locked by another process writing it (another `faas-infer profile`?): "
                                     "try again when it is done") from exc
            if os.path.isdir(path):
                raise ProfileDBError(f"{path}: is a folder, not a profile DB file") from exc
            if not readonly and ("readonly" in str(exc) or "unable to open" in str(exc)):
                raise ProfileDBError(f"{path}: cannot be written ({exc}): give a writable --db") from exc
            raise ProfileDBError(f"{path}: not a usable profile DB ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise ProfileDBError(f"{path}: not a usable profile DB ({exc})") from exc
        except OSError as exc:
            raise ProfileDBError(f"{path}: cannot create the profile DB there ({exc.strerror or exc})") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> "ProfileDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put_operator(self, spec: OperatorSpec) -> None:
        """Store an operator's signature (idempotent)."""
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO operators VALUES (?, ?, ?, ?)",
                               (spec.key, spec.name, spec.signature, int(spec.invariant)))

    def operators(self, keys: set[str] | None = None) -> dict[str, OperatorSpec]:
        """Stored operators, all or those in ``keys``."""
        rows = self._conn.execute("SELECT key, name, signature, invariant FROM operators").fetchall()
        return {k: OperatorSpec(k, n, s, bool(i)) for k, n, s, i in rows if keys is None or k in keys}

    def put_timing(self, key: str, hardware: str, device: str, batch: int, threads: int, timing: Timing) -> None:
        """Store (or replace) one measurement."""
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO timings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (key, hardware, device, batch, threads, timing.seconds, timing.iqr,
                                int(timing.noisy), time.time()))

    def put_timings(self, key: str, hardware: str, device: str, timings: dict[tuple[int, int], Timing]) -> None:
        """Store (or replace) one operator's measurements by (batch, threads), in one transaction."""
        now = time.time()
        rows = [(key, hardware, device, b, c, t.seconds, t.iqr, int(t.noisy), now) for (b, c), t in timings.items()]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO timings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def timings(self, keys: set[str], hardware: str, device: str) -> dict[str, dict[tuple[int, int], float]]:
        """Median seconds per (batch, threads) for each of ``keys`` on ``hardware``/``device``."""
        found: dict[str, dict[tuple[int, int], float]] = {}
        rows = self._conn.execute("SELECT key, batch, threads, seconds FROM timings WHERE hardware=? AND device=?",
                                  (hardware, device)).fetchall()
        for key, batch, threads, seconds in rows:
            if key in keys:
                found.setdefault(key, {})[(batch, threads)] = seconds
        return found

    def noisy_count(self, keys: set[str], hardware: str, device: str) -> int:
        """How many stored measurements of ``keys`` were flagged noisy."""
        rows = self._conn.execute("SELECT key FROM timings WHERE hardware=? AND device=? AND noisy=1",
                                  (hardware, device)).fetchall()
        return sum(1 for (key,) in rows if key in keys)

    def hardware_ids(self) -> list[str]:
        """Hardware ids with timings, for error messages."""
        return [h for (h,) in self._conn.execute("SELECT DISTINCT hardware FROM timings ORDER BY hardware")]

    def put_model(self, model_ref: str, graph: OpGraph) -> None:
        """Store a model's graph under its normalized reference (a folder also under its absolute path); a
        graph that differs from the stored one drops the model's calibrations, which were fitted to the other."""
        with self._lock, self._conn:
            for ref in _store_keys(model_ref):
                old = self._conn.execute("SELECT graph FROM models WHERE ref=?", (ref,)).fetchone()
                if old is not None and not _same_graph(old[0], graph):
                    # a changed model that was not calibrated again (--no-calibrate, a failed run) was
                    # predicted with the old model's correction
                    self._conn.execute("DELETE FROM calibrations WHERE ref=?", (ref,))
                self._conn.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?)",
                                   (ref, graph.to_json(), time.time()))
            for spec in graph.ops:
                self._conn.execute("INSERT OR IGNORE INTO operators VALUES (?, ?, ?, ?)",
                                   (spec.key, spec.name, spec.signature, int(spec.invariant)))

    def model_graph(self, model_ref: str) -> OpGraph:
        """A stored model's graph; NoProfileError when it was never profiled."""
        ref = normalize_ref(model_ref)
        row = self._first("SELECT graph FROM models WHERE ref=?", model_ref)
        if row is None:
            raise NoProfileError(f"model {ref!r} is not in {self.path}: run `{profile_command(ref, self.path)}` first")
        try:
            return OpGraph.from_json(row[0])
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # a hand-edited or foreign row: a traceback
            raise ProfileDBError(f"{self.path}: the stored graph of {ref!r} is unreadable ({type(exc).__name__}: "
                                 f"{exc}): run `{profile_command(ref, self.path)}` again") from exc

    def models(self) -> list[str]:
        """References of stored models."""
        return [r for (r,) in self._conn.execute("SELECT ref FROM models ORDER BY ref")]

    def put_overhead(self, hardware: str, device: str, threads: int, name: str, seconds: float) -> None:
        """Store one calibrated overhead."""
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO overheads VALUES (?, ?, ?, ?, ?)",
                               (hardware, device, threads, name, seconds))

    def overheads(self, hardware: str, device: str, name: str) -> dict[int, float]:
        """Calibrated seconds per thread count for overhead ``name``."""
        rows = self._conn.execute("SELECT threads, seconds FROM overheads WHERE hardware=? AND device=? AND name=?",
                                  (hardware, device, name)).fetchall()
        return {int(t): float(s) for t, s in rows}

    def put_calibration(self, model_ref: str, hardware: str, device: str, factor: float, offset: float = 0.0,
                        detail: str = "", threads: int = 1) -> None:
        """Store a model's correction (measured = factor * composed + offset) for ``threads`` on a device."""
        with self._lock, self._conn:
            for ref in _store_keys(model_ref):
                self._conn.execute("INSERT OR REPLACE INTO calibrations VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (ref, hardware, device, threads, factor, offset, detail))

    def clear_calibrations(self, model_ref: str, hardware: str, device: str) -> None:
        """Forget a model's corrections on ``hardware``/``device`` (before re-calibrating)."""
        with self._lock, self._conn:
            for ref in _lookup_keys(model_ref):
                self._conn.execute("DELETE FROM calibrations WHERE ref=? AND hardware=? AND device=?",
                                   (ref, hardware, device))

    def calibrations(self, model_ref: str, hardware: str, device: str) -> dict[int, tuple[float, float]]:
        """A model's (factor, offset seconds) per calibrated thread count; empty when never calibrated."""
        for ref in _lookup_keys(model_ref):
            rows = self._conn.execute("SELECT threads, factor, offset FROM calibrations WHERE ref=? AND hardware=? "
                                      "AND device=?", (ref, hardware, device)).fetchall()
            if rows:
                return {int(t): (float(f), float(o)) for t, f, o in rows}
        return {}

    def _first(self, sql: str, model_ref: str, *params: object) -> tuple | None:
        """The first row for the reference as written, else for the folder's absolute path."""
        for ref in _lookup_keys(model_ref):
            row = self._conn.execute(sql, (ref, *params)).fetchone()
            if row is not None:
                return row
        return None
