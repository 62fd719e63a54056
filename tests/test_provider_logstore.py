"""The provider's log store: heartbeats for quiet follows, and a deleted function's logs dropped after a grace
period (its open file closed), unless the name is deployed again."""

from __future__ import annotations

import threading

from provider.logstore import LogStore


def test_a_quiet_follow_gets_heartbeats_and_then_new_lines(tmp_path):
    logs = LogStore("openfaas-fn", str(tmp_path))
    logs.append("fn", "fn-1", "old\n")
    stream = logs.read("fn", tail=0, follow=True, heartbeat=0.05)
    assert next(stream) is None  # nothing new yet: a heartbeat, not a block
    threading.Timer(0.1, logs.append, ("fn", "fn-1", "new\n")).start()
    items = [next(stream) for _ in range(40)]
    assert [m.text for m in items if m is not None][:1] == ["new"]
    logs.close()
    assert list(stream) == []  # closing ends the follow


def test_without_heartbeat_a_follow_yields_only_lines(tmp_path):
    logs = LogStore("openfaas-fn", "")
    logs.append("fn", "fn-1", "a")
    alive = iter([True, True, False])
    assert [m.text for m in logs.read("fn", follow=True, alive=lambda: next(alive))] == ["a"]


def test_a_retired_function_is_dropped_after_its_grace_period(tmp_path):
    logs = LogStore("openfaas-fn", str(tmp_path))
    logs.append("gone", "gone-1", "bye")
    logs.append("kept", "kept-1", "hi")
    follower = logs.read("gone", tail=0, follow=True, heartbeat=0.05)
    assert next(follower) is None
    logs.retire("gone", grace=10, now=100.0)
    assert logs.sweep(109.0) == [] and logs.has("gone")
    assert logs.sweep(110.0) == ["gone"]
    assert not logs.has("gone") and logs.has("kept")
    assert "gone" not in logs._files and not logs._retiring
    assert list(follower) == []  # its follow ends
    assert (tmp_path / "gone.log").read_text().endswith("bye\n")  # the file stays on disk
    logs.close()


def test_a_name_deployed_again_keeps_its_logs(tmp_path):
    logs = LogStore("openfaas-fn", str(tmp_path))
    logs.append("fn", "fn-1", "first life")
    logs.retire("fn", grace=1, now=0.0)
    logs.keep("fn")
    assert logs.sweep(5.0) == [] and logs.has("fn")
    logs.close()
