"""The timer with an injected clock: block sizing, median, IQR, noise flag, synchronization."""

from __future__ import annotations

import pytest

from cop_profiler.timer import TimingPolicy, measure


class FakeClock:
    """Advances by a scripted duration on every call of the timed function."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_cheap_calls_are_grouped_into_blocks():
    clock = FakeClock([0.0001])
    m = measure(clock.work, TimingPolicy(warmup=2, min_block=0.001, blocks=3, max_blocks=3), clock=clock)
    assert m.calls_per_block == 10
    assert clock.calls == 2 + 30
    assert m.median == pytest.approx(0.0001)
    assert not m.noisy


def test_median_ignores_one_slow_block_but_flags_noise():
    clock = FakeClock([0.01, 0.01, 0.01, 0.05, 0.01, 0.01, 0.03])
    m = measure(clock.work, TimingPolicy(warmup=1, min_block=0.0, blocks=6, max_blocks=6), clock=clock)
    assert m.median == pytest.approx(0.01)
    assert m.noisy


def test_noisy_measurements_take_more_blocks_until_quiet_or_capped():
    clock = FakeClock([0.01, 0.05, 0.01, 0.05] + [0.01] * 20)
    m = measure(clock.work, TimingPolicy(warmup=1, min_block=0.0, blocks=3, max_blocks=20), clock=clock)
    assert 3 < m.blocks < 20 and not m.noisy and m.median == pytest.approx(0.01)
    capped = FakeClock([0.01, 0.05] * 20)
    m = measure(capped.work, TimingPolicy(warmup=1, min_block=0.0, blocks=3, max_blocks=7), clock=capped)
    assert m.blocks == 7 and m.noisy


def test_quiet_calls_stop_at_the_minimum_and_few_blocks_are_judged_by_their_range():
    quiet = FakeClock([0.01, 0.01, 0.0105, 0.0095])
    m = measure(quiet.work, TimingPolicy(warmup=1, min_block=0.0), clock=quiet)
    assert m.blocks == 3 and not m.noisy
    one_off = FakeClock([0.01, 0.01, 0.01, 0.013] + [0.01] * 10)  # the IQR of three would hide it
    m = measure(one_off.work, TimingPolicy(warmup=1, min_block=0.0), clock=one_off)
    assert m.blocks == 5 and m.median == pytest.approx(0.01) and not m.noisy


def test_microsecond_jitter_is_not_noise():
    tiny = FakeClock([2e-6, 2e-6, 3e-6, 2e-6])  # a 50% spread, but of one microsecond
    m = measure(tiny.work, TimingPolicy(warmup=1, min_block=0.0), clock=tiny)
    assert m.blocks == 3 and not m.noisy


def test_min_estimator_reports_the_fastest_block():
    clock = FakeClock([0.02, 0.03, 0.01, 0.02])
    m = measure(clock.work, TimingPolicy(warmup=1, min_block=0.0, blocks=3, estimator="min"), clock=clock)
    assert m.median == pytest.approx(0.01)


def test_sync_brackets_every_timed_span():
    clock, synced = FakeClock([0.01]), []
    measure(clock.work, TimingPolicy(warmup=1, min_block=0.0, blocks=2, max_blocks=2), clock=clock,
            sync=lambda: synced.append(1))
    assert len(synced) == 2 * 3


def test_policy_is_validated():
    for bad in ({"warmup": 0}, {"blocks": 0}, {"min_block": -1}, {"estimator": "mean"}, {"max_blocks": 2},
                {"noise_floor": -1.0}):
        with pytest.raises(ValueError):
            TimingPolicy(**bad)


def test_retries_keep_the_faster_measurement_and_flag_thread_slowdowns():
    from cop_profiler.timer import Measurement, implausible, quieter

    slow, fast = Measurement(1.0, 0.05, 1, 5, False), Measurement(0.8, 0.4, 1, 5, True)
    assert quieter(slow, fast) is fast and quieter(fast, slow) is fast
    assert implausible({(1, 1): 1.0, (1, 2): 1.2, (1, 4): 3.0}) == {(1, 4)}  # 4 threads: 2.5x slower
    assert implausible({(1, 1): 2.0, (2, 1): 1.0, (4, 1): 2.1}) == {(1, 1)}  # batch 1 slower than batch 2
    assert implausible({(1, 1): 1.0}) == set()
    assert implausible({(1, 1): 4e-6, (1, 2): 9e-6}) == set()  # waking a second thread: real, not interference
