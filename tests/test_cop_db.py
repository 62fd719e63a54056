"""Profile DB: round trips, hardware and device separation, schema checks, reference normalization."""

from __future__ import annotations

import os
import re
import sqlite3

import pytest

from cop_profiler.db import ProfileDB, Timing, normalize_ref
from cop_profiler.errors import NoProfileError, ProfileDBError
from cop_profiler.graph import OpGraph, OpNode
from cop_profiler.opspec import OperatorSpec


@pytest.fixture
def db(tmp_path):
    with ProfileDB(str(tmp_path / "sub" / "p.sqlite")) as db:
        yield db


def test_timings_round_trip_and_stay_per_hardware_and_device(db):
    db.put_timing("k1", "cpuA x2", "cpu", 4, 2, Timing(0.01, 0.001, True))
    db.put_timing("k1", "cpuB x8", "cpu", 4, 2, Timing(0.05))
    db.put_timing("k1", "cpuA x2 | GPU", "cuda", 4, 1, Timing(0.001))
    assert db.timings({"k1"}, "cpuA x2", "cpu") == {"k1": {(4, 2): 0.01}}
    assert db.timings({"k1"}, "cpuB x8", "cpu") == {"k1": {(4, 2): 0.05}}
    assert db.timings({"k1"}, "cpuA x2", "cuda") == {}
    assert db.noisy_count({"k1"}, "cpuA x2", "cpu") == 1
    assert db.hardware_ids() == ["cpuA x2", "cpuA x2 | GPU", "cpuB x8"]
    db.put_timing("k1", "cpuA x2", "cpu", 4, 2, Timing(0.02))
    assert db.timings({"k1", "other"}, "cpuA x2", "cpu") == {"k1": {(4, 2): 0.02}}


def test_one_operators_timings_are_stored_together(db):
    db.put_timings("k2", "cpuA x2", "cpu", {(1, 1): Timing(0.001), (32, 2): Timing(0.02, 0.004, True)})
    assert db.timings({"k2"}, "cpuA x2", "cpu") == {"k2": {(1, 1): 0.001, (32, 2): 0.02}}
    assert db.noisy_count({"k2"}, "cpuA x2", "cpu") == 1


def test_models_operators_overheads_calibrations_round_trip(db):
    spec = OperatorSpec.create("ReLU", "module:ReLU()|args=(T(float32,[-1, 4]))", invariant=False)
    graph = OpGraph((OpNode(0, spec.key, (), "relu"),), (spec,), 2)
    db.put_model("./functions/x/", graph)
    assert db.model_graph("functions/x") == graph
    assert db.models() == ["functions/x"]
    assert db.operators() == {spec.key: spec}
    db.put_overhead("hw", "cpu", 1, "module_call", 3e-6)
    assert db.overheads("hw", "cpu", "module_call") == {1: 3e-6}
    assert db.calibrations("functions/x", "hw", "cpu") == {}
    db.put_calibration("functions/x", "hw", "cpu", 1.1, 0.002)
    db.put_calibration("functions/x", "hw", "cpu", 1.3, 0.0, threads=2)
    assert db.calibrations("functions/x/", "hw", "cpu") == {1: (1.1, 0.002), 2: (1.3, 0.0)}
    db.clear_calibrations("functions/x", "hw", "cpu")
    assert db.calibrations("functions/x", "hw", "cpu") == {}


def test_a_folder_is_found_by_relative_or_absolute_path(db, tmp_path, monkeypatch):
    (tmp_path / "functions" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    graph = OpGraph((OpNode(0, "k"),))
    db.put_model("functions/m", graph)
    db.put_calibration("functions/m", "hw", "cpu", 1.2)
    absolute = str(tmp_path / "functions" / "m")
    assert db.model_graph(absolute) == graph and db.calibrations(absolute, "hw", "cpu") == {1: (1.2, 0.0)}
    assert db.models() == sorted(["functions/m", absolute.replace("\\", "/")])


def test_unknown_model_is_a_clear_error(db):
    with pytest.raises(NoProfileError, match="faas-infer profile functions/nope"):
        db.model_graph("functions/nope")


def test_data_survives_reopening(tmp_path):
    path = str(tmp_path / "p.sqlite")
    with ProfileDB(path) as db:
        db.put_timing("k", "hw", "cpu", 1, 1, Timing(1.5))
    with ProfileDB(path) as db:
        assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 1.5}}


def test_other_schema_or_garbage_is_refused(tmp_path):
    path = tmp_path / "old.sqlite"
    with ProfileDB(str(path)):
        pass
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='0' WHERE name='schema'")
    conn.commit()
    conn.close()
    with pytest.raises(ProfileDBError, match="schema version 0"):
        ProfileDB(str(path))
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProfileDBError, match="not a usable profile DB"):
        ProfileDB(str(junk))


def test_normalize_ref():
    assert normalize_ref("./functions/mlp/") == "functions/mlp"
    assert normalize_ref("pkg.mod:build") == "pkg.mod:build"


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_reading_never_writes_and_a_foreign_sqlite_file_is_refused(tmp_path):
    # predict opened the DB as profile does: an empty file became a profile DB, and another application's
    # SQLite file got our six tables added to it
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(ProfileDBError, match="not a profile DB"):
        ProfileDB(str(empty), readonly=True)
    assert _bytes(empty) == b""
    foreign = tmp_path / "app.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = _bytes(foreign)
    for readonly in (True, False):
        with pytest.raises(ProfileDBError, match="tables users"):
            ProfileDB(str(foreign), readonly=readonly)
        assert _bytes(foreign) == before
    with pytest.raises(ProfileDBError, match="no profile DB at"):
        ProfileDB(str(tmp_path / "none.sqlite"), readonly=True)
    assert not (tmp_path / "none.sqlite").exists()
    path = str(tmp_path / "p.sqlite")
    with ProfileDB(path) as db:
        db.put_timing("k", "hw", "cpu", 1, 1, Timing(1.5))
    before = _bytes(path)
    with ProfileDB(path, readonly=True) as db:
        assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 1.5}}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.put_timing("k", "hw", "cpu", 2, 1, Timing(1.0))
    assert _bytes(path) == before


# calibrations as the first schema 1 had it: no offset, no threads (the other tables are unchanged)
OLD_CALIBRATIONS = """CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
CREATE TABLE calibrations (ref TEXT NOT NULL, hardware TEXT NOT NULL, device TEXT NOT NULL,
    factor REAL NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (ref, hardware, device));
INSERT INTO calibrations VALUES ('functions/x', 'hw', 'cpu', 1.25, 'batches=[1, 8]');
CREATE TABLE timings (key TEXT NOT NULL, hardware TEXT NOT NULL, device TEXT NOT NULL,
    batch INTEGER NOT NULL, threads INTEGER NOT NULL, seconds REAL NOT NULL, iqr REAL NOT NULL,
    noisy INTEGER NOT NULL, measured_at REAL NOT NULL, PRIMARY KEY (key, hardware, device, batch, threads));
INSERT INTO timings VALUES ('k', 'hw', 'cpu', 1, 1, 0.5, 0.0, 0, 0);
"""


def test_a_db_of_an_older_schema_1_is_upgraded_keeping_its_timings(tmp_path):
    # it passed the version check, had every operator timed, then failed storing the calibration
    path = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(path)
    conn.executescript(OLD_CALIBRATIONS)
    conn.close()
    with pytest.raises(ProfileDBError, match="older faas-infer .*calibrations has no threads or offset column"):
        ProfileDB(path, readonly=True)
    with ProfileDB(path) as db:
        assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 0.5}}
        assert db.calibrations("functions/x", "hw", "cpu") == {1: (1.25, 0.0)}
        db.put_calibration("functions/x", "hw", "cpu", 1.1, 0.001, threads=2)
    with ProfileDB(path, readonly=True) as db:
        assert db.calibrations("functions/x", "hw", "cpu") == {1: (1.25, 0.0), 2: (1.1, 0.001)}
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE timings ADD COLUMN extra TEXT")
    conn.commit()
    conn.close()
    with pytest.raises(ProfileDBError, match="tables timings are not of this version's schema"):
        ProfileDB(path)


def test_a_db_locked_by_another_writer_says_so(tmp_path):
    path = str(tmp_path / "p.sqlite")
    with ProfileDB(path) as db:
        db.put_timing("k", "hw", "cpu", 1, 1, Timing(1.5))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ProfileDBError, match="locked by another process"):
            ProfileDB(path, readonly=True)
    finally:
        other.close()
    with ProfileDB(path, readonly=True) as db:
        assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 1.5}}


@pytest.mark.parametrize("stored", ["{}", "[]", "not json", '{"nodes": [[0]]}', '{"nodes": [[0, "k", [5], "x"]]}'])
def test_an_unreadable_stored_graph_is_a_profile_db_error(tmp_path, stored):
    # {} and [] went up as a KeyError and a TypeError traceback, the others as messages naming neither the
    # DB nor the model
    path = str(tmp_path / "g.sqlite")
    with ProfileDB(path) as db:
        db.put_model("pkg.mod:build", OpGraph((OpNode(0, "k"),)))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE models SET graph=?", (stored,))
    conn.commit()
    conn.close()
    with ProfileDB(path, readonly=True) as db:
        unreadable = re.escape(f"{path}: the stored graph of 'pkg.mod:build' is unreadable")
        with pytest.raises(ProfileDBError, match=unreadable):
            db.model_graph("pkg.mod:build")


def _immutable(path, on: bool) -> bool:
    import subprocess

    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_db_that_cannot_be_written_is_refused_when_opened_for_writing(tmp_path, what):
    # it failed only at the first store, after the model was built and traced ("attempt to write a readonly
    # database"; for a folder the journal cannot go in, "unable to open database file")
    folder = tmp_path / "dbs"
    folder.mkdir()
    path = folder / "p.sqlite"
    with ProfileDB(str(path)) as db:
        db.put_timing("k", "hw", "cpu", 1, 1, Timing(1.5))
    before = _bytes(path)
    locked = path if what == "file" else folder
    if not _immutable(locked, True):  # root on a file system with attributes only: chmod does not stop root
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(ProfileDBError, match="cannot be written .*give a writable --db"):
            ProfileDB(str(path))
        with ProfileDB(str(path), readonly=True) as db:
            assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 1.5}}
    finally:
        _immutable(locked, False)
    assert _bytes(path) == before
    with pytest.raises(ProfileDBError, match="is a folder"):
        ProfileDB(str(folder))


def test_a_changed_graph_drops_the_calibrations_fitted_to_the_old_one(db):
    a, b = OperatorSpec.create("A", "sig-a"), OperatorSpec.create("B", "sig-b")
    one = OpGraph((OpNode(0, a.key),), (a,), 2, notes=("fx",))
    db.put_model("pkg.mod:build", one)
    db.put_calibration("pkg.mod:build", "hw", "cpu", 1.3, 0.001)
    db.put_model("pkg.mod:build", OpGraph(one.nodes, one.ops, 2, notes=("other notes",)))  # the same model
    assert db.calibrations("pkg.mod:build", "hw", "cpu") == {1: (1.3, 0.001)}
    # the correction of one graph stayed in force for another when the new one was not calibrated
    db.put_model("pkg.mod:build", OpGraph((OpNode(0, a.key), OpNode(1, b.key, (0,))), (a, b), 2))
    assert db.calibrations("pkg.mod:build", "hw", "cpu") == {}


@pytest.mark.parametrize("name", ["/{}/p.sqlite", "{}/a b?c#d%41%.sqlite", "{}/p\udcff.sqlite"])
def test_any_path_profile_writes_is_read_read_only(tmp_path, name):
    # read-only readers open a file: URI; "file:" + "//tmp/..." read the first folder as a host name ("invalid
    # uri authority"; --db $DIR/p.sqlite with DIR=/), and a name that is not UTF-8 could not be quoted
    path = name.format(tmp_path)
    with ProfileDB(path) as db:
        db.put_timing("k", "hw", "cpu", 1, 1, Timing(1.5))
    with ProfileDB(path, readonly=True) as db:
        assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 1.5}}


# A writer killed inside a transaction whose changes spilled into the file: it leaves a hot journal.
_KILLED_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA cache_size=2")
conn.execute("DELETE FROM timings")
for i in range(2000):
    conn.execute("INSERT INTO timings VALUES (?, 'hw', 'cpu', 1, 1, 9.0, 0, 0, 0)", ("new" + "x" * 100 + str(i),))
os._exit(0)
"""


def _killed_half_way(path: str) -> None:
    import subprocess
    import sys

    with ProfileDB(path) as db:
        db.put_timings("k", "hw", "cpu", {(b, 1): Timing(1.5) for b in range(1, 2001)})
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, path], check=True)
    assert os.path.getsize(path + "-journal") > 0  # the journal the write left


def test_a_write_killed_half_way_is_rolled_back_for_read_only_readers(tmp_path):
    # a read-only connection may not roll a hot journal back: predict and the autoscaler failed with "not a
    # usable profile DB (attempt to write a readonly database)" until the next `faas-infer profile`
    path = str(tmp_path / "p.sqlite")
    _killed_half_way(path)
    with ProfileDB(path, readonly=True) as db:
        assert len(db.timings({"k"}, "hw", "cpu")["k"]) == 2000
        assert db.timings({"new" + "x" * 100 + "0"}, "hw", "cpu") == {}
    assert not os.path.exists(path + "-journal")


def test_a_hot_journal_where_nothing_can_be_written_says_what_to_do(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = str(folder / "p.sqlite")
    _killed_half_way(path)
    if not _immutable(folder, True):  # a read-only mount, as root can have one here
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(ProfileDBError, match="interrupted write left p.sqlite-journal .*faas-infer profile"):
            ProfileDB(path, readonly=True)
    finally:
        _immutable(folder, False)
    with ProfileDB(path, readonly=True) as db:
        assert len(db.timings({"k"}, "hw", "cpu")["k"]) == 2000


@pytest.mark.parametrize("tables", ["CREATE TABLE meta (key TEXT, val TEXT); CREATE TABLE users (name TEXT)",
                                    "CREATE TABLE meta (name TEXT, value TEXT); CREATE TABLE users (name TEXT)"])
def test_another_applications_file_with_a_meta_table_is_refused_and_left_alone(tmp_path, tables):
    # a table named meta passed the check: profile added our five tables to the file, then failed
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(tables)
    conn.close()
    before = _bytes(path)
    for readonly in (True, False):
        with pytest.raises(ProfileDBError, match="not a profile DB .*tables meta, users"):
            ProfileDB(str(path), readonly=readonly)
        assert _bytes(path) == before


def test_a_profile_db_whose_creation_was_cut_short_is_completed(tmp_path):
    path = str(tmp_path / "p.sqlite")
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL); "
                       "CREATE TABLE operators (key TEXT PRIMARY KEY, name TEXT NOT NULL, signature TEXT NOT NULL, "
                       "invariant INTEGER NOT NULL DEFAULT 0);")
    conn.close()
    with ProfileDB(path) as db:
        db.put_timing("k", "hw", "cpu", 1, 1, Timing(1.5))
    with ProfileDB(path, readonly=True) as db:
        assert db.timings({"k"}, "hw", "cpu") == {"k": {(1, 1): 1.5}}
