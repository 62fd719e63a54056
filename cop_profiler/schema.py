"""The profile DB's schema: creating it, checking a file against it, and upgrading an older schema 1.

Torch-free. A DB opened for reading is never written; one opened for writing must be a profile DB or empty.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from cop_profiler.errors import ProfileDBError

SCHEMA_VERSION = "1"
# SQLITE_READONLY_ROLLBACK: a read-only connection found a hot journal it may not roll back.
_READONLY_ROLLBACK = 776

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operators (key TEXT PRIMARY KEY, name TEXT NOT NULL, signature TEXT NOT NULL,
    invariant INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS timings (key TEXT NOT NULL, hardware TEXT NOT NULL, device TEXT NOT NULL,
    batch INTEGER NOT NULL, threads INTEGER NOT NULL, seconds REAL NOT NULL, iqr REAL NOT NULL,
    noisy INTEGER NOT NULL, measured_at REAL NOT NULL, PRIMARY KEY (key, hardware, device, batch, threads));
CREATE TABLE IF NOT EXISTS models (ref TEXT PRIMARY KEY, graph TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS calibrations (ref TEXT NOT NULL, hardware TEXT NOT NULL, device TEXT NOT NULL,
    threads INTEGER NOT NULL, factor REAL NOT NULL, offset REAL NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (ref, hardware, device, threads));
CREATE TABLE IF NOT EXISTS overheads (hardware TEXT NOT NULL, device TEXT NOT NULL, threads INTEGER NOT NULL,
    name TEXT NOT NULL, seconds REAL NOT NULL, PRIMARY KEY (hardware, device, threads, name));
"""



def _tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Column names of each table of a connection's main database."""
    names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {n: [row[1] for row in conn.execute(f"PRAGMA table_info('{n}')")] for n in names}


def _expected() -> dict[str, list[str]]:
    """The columns of every table of the current schema (read from ``_SCHEMA`` itself)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        return _tables(conn)
    finally:
        conn.close()


def _upgrade(conn: sqlite3.Connection, path: str, found: dict[str, list[str]], readonly: bool) -> None:
    """Bring a DB of an older schema 1 up to date, or refuse it naming what differs. Schema 1 changed twice
    without a new version: ``calibrations`` gained ``offset``, then ``threads``; such a DB passed the version
    check, had every operator timed, then failed to store the calibration (7 values for 5 columns)."""
    expected = _expected()
    differ = sorted(t for t, cols in expected.items() if t in found and found[t] != cols)
    if not differ:
        return
    kept = {"ref", "hardware", "device", "factor", "detail"}
    if differ != ["calibrations"] or not kept <= set(found["calibrations"]):
        raise ProfileDBError(f"{path}: tables {', '.join(differ)} are not of this version's schema: "
                             "profile into another --db")
    if readonly:
        raise ProfileDBError(f"{path}: written by an older faas-infer (calibrations has no "
                             f"{' or '.join(c for c in expected['calibrations'] if c not in found['calibrations'])} "
                             "column): run `faas-infer profile` on it once to upgrade it")
    offset = "offset" if "offset" in found["calibrations"] else "0.0"
    # the old rows are one correction for every thread count: the lowest one stands for all (``correction``)
    # one script, one transaction: a failure half way leaves the old table (the connection closes, rolling back)
    conn.executescript(f"BEGIN; ALTER TABLE calibrations RENAME TO calibrations_old; {_SCHEMA} "
                       f"INSERT INTO calibrations SELECT ref, hardware, device, 1, factor, {offset}, detail "
                       "FROM calibrations_old; DROP TABLE calibrations_old; COMMIT;")


def _uri(path: str, mode: str) -> str:
    """A ``file:`` URI of ``path``: ``file:`` and the path alone read a path starting ``//`` (``--db
    $DIR/p.sqlite`` with DIR=/) as a host name, and quoting its bytes keeps a name that is not UTF-8."""
    return "file://" + urllib.parse.quote(os.fsencode(os.path.abspath(path))) + f"?mode={mode}"


def _connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection. A write killed half way (a ``faas-infer profile`` stopped by SIGKILL, the
    machine going down) leaves a hot ``-journal`` that the next connection must roll back, which a read-only
    one cannot: every reader failed with "attempt to write a readonly database" until a writer came. It is
    rolled back here, restoring the last committed state (nothing of ours is written), where the file can
    be written; on a read-only mount it cannot, and the error says what to do."""
    conn = sqlite3.connect(_uri(path, "ro"), uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", None) != _READONLY_ROLLBACK:
            raise
    try:
        rollback = sqlite3.connect(_uri(path, "rw"), uri=True)
        try:
            rollback.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            rollback.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # a writer came first, and rolls it back
            raise
        raise ProfileDBError(f"{path}: an interrupted write left {os.path.basename(path)}-journal to roll back, "
                             f"which needs write access ({exc}): run `faas-infer profile` on it once where it "
                             "can be written") from exc
    return sqlite3.connect(_uri(path, "ro"), uri=True, check_same_thread=False)


def open_checked(path: str, readonly: bool) -> sqlite3.Connection:
    """A connection to a checked profile DB. Read-only: the file must exist and is never written (predict
    turned an empty file, or another application's SQLite file, into a profile DB). For writing: a SQLite
    file holding other tables and no profile DB's is refused rather than given ours."""
    if readonly:
        if not os.path.isfile(path):
            raise ProfileDBError(f"no profile DB at {path}: run `faas-infer profile MODEL` first")
        conn = _connect_readonly(path)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False)
    try:
        found = _tables(conn)
        row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone() \
            if found.get("meta") == ["name", "value"] else None
        if row is None and (readonly or not set(found) <= set(_expected())):
            # only a new file, or one whose creation was cut short, is made a profile DB: another application's
            # file with a table named meta (a common name) passed as ours and got our tables added
            what = f"a SQLite file with tables {', '.join(sorted(found))}" if found else "empty"
            raise ProfileDBError(f"{path}: not a profile DB ({what}): give the --db `faas-infer profile` wrote")
        if row is not None and row[0] != SCHEMA_VERSION:
            raise ProfileDBError(f"{path}: schema version {row[0]}, expected {SCHEMA_VERSION}")
        if not readonly:
            conn.executescript(_SCHEMA)
        _upgrade(conn, path, _tables(conn), readonly)
        if not readonly:
            # a write now, whether or not the row is there: a read-only file, or a folder where the journal
            # cannot go, failed only at the first store, after the model was built and traced, and the folder as
            # "unable to open database file"
            with conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    except BaseException:
        conn.close()
        raise
    return conn
