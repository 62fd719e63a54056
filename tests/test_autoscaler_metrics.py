"""The autoscaler's metrics: what their help texts say they measure."""

from __future__ import annotations

from autoscaler.metrics import AutoscalerMetrics


def test_decision_seconds_says_it_times_decide_alone():
    # loop.tick starts its clock after observe and reads it before act
    help_text = AutoscalerMetrics().decision_seconds.help
    assert "decide" in help_text and "observing and acting not counted" in help_text
