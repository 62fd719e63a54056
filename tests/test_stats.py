"""Queue statistics: the pure arrival-rate arithmetic, and the reader against a real Redis."""

from __future__ import annotations

from batcher import keys, live_config, stats
from batcher.policy import BatchConfig

FN = "fn"
NOW = 1_000_000.5


def test_arrival_rates_count_only_full_seconds_before_now():
    counts = {999_999: 4, 999_995: 10, 999_950: 60, 1_000_000: 99}
    rates = stats.arrival_rates(counts, NOW, (1, 10, 60))
    assert rates == {1: 4.0, 10: 1.4, 60: 74 / 60}


def test_the_reader_lists_live_instances_with_their_config_and_exec_times(redis_client):
    pipe = redis_client.pipeline()
    for second, count in ((999_999, 5), (999_990, 5)):
        stats.record_arrival(pipe, FN, second, count)
    facts = {"host": "h", "port": "8080", **live_config.to_fields(BatchConfig(16, 0.01, 0.2))}
    stats.record_heartbeat(pipe, FN, "a", NOW - 0.5, facts, {1: 0.002, 16: 0.01})
    stats.record_heartbeat(pipe, FN, "gone", NOW - stats.STALE_AFTER - 1, {"host": "h"}, {})
    stats.record_served(pipe, FN, "a", 7, expired=2)
    pipe.lpush(keys.queue(FN), b"x", b"y")
    pipe.lpush(keys.claimed(FN, "a"), b"z")
    pipe.execute()
    got = stats.read_function_stats(redis_client, FN, NOW)
    assert (got.depth, got.claimed) == (2, 1)
    assert got.arrival_rate == {1: 5.0, 10: 1.0, 60: 10 / 60}
    assert [i.instance for i in got.instances] == ["a"]
    a = got.instances[0]
    assert a.config == BatchConfig(16, 0.01, 0.2)
    assert (a.served, a.heartbeat, a.exec_seconds) == (7, NOW - 0.5, {1: 0.002, 16: 0.01})
    assert a.facts == {"host": "h", "port": "8080"}
    assert got.counters == {"served": 7, "expired": 2, "reclaimed": 0, "dropped": 0, "refused": 0}
    assert stats.list_functions(redis_client) == [FN]


def test_an_unknown_function_reads_as_empty(redis_client):
    got = stats.read_function_stats(redis_client, "nobody", NOW)
    assert (got.depth, got.instances, got.counters["served"]) == (0, (), 0)


def test_old_arrival_counts_are_trimmed(redis_client):
    stats.record_arrival(redis_client, FN, NOW - 1000)
    stats.record_arrival(redis_client, FN, NOW - 1)
    assert stats.trim_arrivals(redis_client, FN, NOW) == 1
    assert redis_client.hlen(keys.arrivals(FN)) == 1
