"""The share of the SLO admission may fill: 1 while requests keep their SLO, lower while they run late."""

from __future__ import annotations

import pytest

from batcher.headroom import Headroom

SLO = 0.05


def feed(headroom: Headroom, now: float, latency: float, count: int = 200) -> float:
    """``count`` answers of ``latency`` seconds at ``now``; the share right after."""
    headroom.observe(now, [latency] * count, SLO)
    return headroom.share(now)


def test_requests_within_the_slo_leave_all_of_it_to_admission():
    h = Headroom()
    for step in range(10):
        assert feed(h, step * 0.3, 0.045) == 1.0


def test_requests_past_the_slo_lower_the_share_damped_then_it_recovers():
    h = Headroom(gain=0.5)
    assert feed(h, 0.0, 2 * SLO) == pytest.approx(0.5 ** 0.5)  # p99 at twice the SLO: one damped step
    assert feed(h, 0.3, 2 * SLO) == pytest.approx(0.5)
    assert feed(h, 0.6, 0.5 * SLO) == pytest.approx(0.5 * 2 ** 0.5)  # back under: grows again
    assert feed(h, 0.9, 0.5 * SLO) == pytest.approx(1.0)  # never above 1


def test_the_quantile_is_a_tail_one():
    h = Headroom(quantile=0.99)
    h.observe(0.0, [0.01] * 985 + [0.2] * 15, SLO)  # 1.5% of answers at four times the SLO
    assert h.share(0.0) == pytest.approx(0.25 ** 0.5)


def test_a_step_needs_enough_answers_and_time_since_the_last():
    h = Headroom(min_samples=200, interval=0.25)
    assert feed(h, 0.0, 2 * SLO, count=199) == 1.0  # too few
    first = feed(h, 0.0, 2 * SLO, count=1)
    assert first < 1.0
    assert feed(h, 0.1, 2 * SLO) == first  # too soon: judged later, on what this share admitted
    assert feed(h, 0.3, 2 * SLO) < first


def test_the_share_has_a_floor_and_goes_back_to_all_once_answers_stop():
    h = Headroom(min_share=0.4, max_age=2.0)
    for step in range(20):
        feed(h, step * 0.3, 10 * SLO)
    assert h.share(5.7) == 0.4
    assert h.share(5.7 + 2.1) == 1.0  # nothing answered for max_age: the load is gone
    assert feed(h, 10.0, 2 * SLO) == pytest.approx(0.5 ** 0.5)  # a new overload starts from 1


def test_settings_are_validated():
    for bad in ({"quantile": 0}, {"quantile": 1.5}, {"min_samples": 0}, {"interval": -1},
                {"interval": 3.0, "max_age": 2.0}, {"gain": 0}, {"min_share": 0}, {"min_share": 1.5}):
        with pytest.raises(ValueError):
            Headroom(**bad)


def test_at_a_low_rate_a_step_is_taken_on_fewer_answers_and_the_share_holds():
    # 50 answers a second, all late: min_samples (200) would take 4 s, past max_age (2 s).
    h = Headroom(min_samples=200, max_age=2.0, few_samples=20)
    shares = [feed(h, k * 0.1, 2 * SLO, count=5) for k in range(40)]
    assert shares[5] == 1.0  # 30 answers over 0.5 s: not yet
    assert min(shares) < 0.6 and all(s < 1.0 for s in shares[11:])  # lowered, and held


def test_few_samples_is_validated():
    with pytest.raises(ValueError, match="few_samples=300"):
        Headroom(min_samples=200, few_samples=300)
