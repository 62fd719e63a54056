"""Which points are timed again: passes by an operator's share of the model's time."""

from __future__ import annotations

import pytest

from cop_profiler.effort import EffortRule, shares


def test_shares_weigh_each_operator_by_its_calls_at_the_points_every_operator_has():
    calls = {"linear": 3, "relu": 3, "head": 1}
    timed = {"linear": {(1, 1): 1.0, (32, 1): 4.0, (8, 1): 2.0},
             "relu": {(1, 1): 0.1, (32, 1): 0.2},
             "head": {(1, 1): 0.3, (32, 1): 0.4}}
    got = shares(calls, timed)
    # (8, 1) is not timed for every operator: only b=1 (3 / 3.6) and b=32 (12 / 13) count.
    assert got["linear"] == pytest.approx(12 / 13)
    assert got["relu"] == pytest.approx(0.3 / 3.6) and got["head"] == pytest.approx(0.3 / 3.6)


def test_a_view_timed_once_costs_its_one_point_everywhere():
    got = shares({"conv": 1, "view": 1}, {"conv": {(1, 1): 1.0, (8, 1): 3.0}, "view": {(1, 1): 1.0}})
    assert got == {"conv": pytest.approx(0.75), "view": pytest.approx(0.5)}


def test_until_every_operator_is_timed_every_operator_matters():
    assert shares({"a": 1, "b": 1}, {"a": {(1, 1): 1.0}}) == {"a": 1.0, "b": 1.0}
    assert shares({"a": 1, "b": 2}, {"a": {(1, 1): 1.0, (2, 1): 1.0}, "b": {(4, 1): 1.0, (8, 1): 1.0}}) == {
        "a": 1.0, "b": 1.0}


def test_rule_gives_heavy_operators_passes_and_tiny_ones_no_retries():
    rule = EffortRule(passes=3, heavy_share=0.2, light_share=0.02)
    assert [rule.passes_for(s) for s in (1.0, 0.2, 0.19, 0.0)] == [3, 3, 1, 1]
    assert rule.retries(0.02) and not rule.retries(0.019)


@pytest.mark.parametrize("kwargs, message", [
    ({"passes": 0}, "passes=0: must be >= 1"),
    ({"light_share": 0.5, "heavy_share": 0.1}, "light_share=0.5, heavy_share=0.1"),
    ({"heavy_share": 1.5}, "heavy_share=1.5"),
])
def test_rule_errors_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EffortRule(**kwargs)
