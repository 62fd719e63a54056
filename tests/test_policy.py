"""The dispatch policy: timeouts from the SLO, admission, the execution-time fit. Pure, fake clock."""

import pytest

from batcher.policy import Admission, BatchConfig, ExecTimeModel, RateMeter, admit, effective_timeout


def fitted(points):
    model = ExecTimeModel()
    for n, t in points:
        model.observe(n, t)
    return model


def test_config_rules_name_key_value_and_rule():
    with pytest.raises(ValueError, match=r"max_batch_size=0: must be >= 1"):
        BatchConfig(max_batch_size=0)
    with pytest.raises(ValueError, match=r"latency_slo=-1: must be a finite number > 0"):
        BatchConfig(latency_slo=-1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"batch_timeout=(nan|inf): must be a finite number >= 0"):
            BatchConfig(batch_timeout=bad)
        with pytest.raises(ValueError, match=r"latency_slo=(nan|inf): must be a finite number > 0"):
            BatchConfig(latency_slo=bad)


def test_exec_model_fits_a_line_and_interpolates():
    model = fitted([(1, 0.002), (8, 0.009), (1, 0.002), (8, 0.009), (1, 0.5)])
    assert model.predict(1) == pytest.approx(0.002)
    assert model.predict(4) == pytest.approx(0.005, rel=1e-6)
    assert model.predict(16) == pytest.approx(0.017, rel=1e-6)


def test_exec_model_with_one_size_prices_every_size_at_its_time_or_along_the_prior():
    model = fitted([(4, 0.004)])
    assert model.predict(8) == pytest.approx(0.004)
    assert model.predict(2) == pytest.approx(0.004)
    model = ExecTimeModel(prior=lambda n: 0.010 + 0.001 * n)
    model.observe(4, 0.007)  # half the prior's 14 ms
    assert model.predict(8) == pytest.approx(0.009)
    assert model.predict(1) == pytest.approx(0.0055)


def test_an_instance_that_ran_only_batches_of_one_admits_a_larger_batch():
    # 50 ms a batch whatever its size, 100 ms SLO, 50 req/s: proportional pricing (400 ms for 8) refused
    # every request that would have joined a batch, so no larger batch was ever run and measured.
    config = BatchConfig(max_batch_size=8, latency_slo=0.1)
    model = fitted([(1, 0.05)] * 5)
    assert admit(1, 0.0, config, model, 1000, arrival_rate=50.0).admitted
    assert effective_timeout(config, model, arrival_rate=50.0, waiting=1) == pytest.approx(0.05)
    model.observe(4, 0.2)  # a batch of 4 turns out to cost four times as much: the line takes over
    assert model.predict(8) == pytest.approx(0.4, rel=0.05)


def test_exec_model_uses_prior_until_measured():
    model = ExecTimeModel(prior=lambda n: 0.001 * n)
    assert model.predict(10) == pytest.approx(0.01)
    assert ExecTimeModel().predict(3) is None


def test_timeout_explicit_wins():
    assert effective_timeout(BatchConfig(8, 0.02, 0.1), fitted([(8, 0.05)]), 1000) == 0.02


def test_timeout_waits_at_most_the_execution_of_the_batch_at_hand():
    config = BatchConfig(max_batch_size=8, latency_slo=0.1)
    model = fitted([(1, 0.004), (8, 0.030)])
    assert effective_timeout(config, model, arrival_rate=500, waiting=1) == pytest.approx(0.004)
    assert effective_timeout(config, model, arrival_rate=500, waiting=8) == pytest.approx(0.030)


def test_timeout_never_exceeds_slo_minus_full_batch_exec():
    config = BatchConfig(max_batch_size=8, latency_slo=0.1)
    model = fitted([(1, 0.070), (8, 0.080)])
    assert effective_timeout(config, model, arrival_rate=500, waiting=1) == pytest.approx(0.02)


def test_timeout_is_zero_when_no_company_is_expected():
    config = BatchConfig(max_batch_size=8, latency_slo=0.1)
    model = fitted([(1, 0.004), (8, 0.030)])
    assert effective_timeout(config, model, arrival_rate=200, waiting=1) == 0.0  # 0.8 arrivals in 4 ms
    assert effective_timeout(config, model, arrival_rate=300, waiting=1) == pytest.approx(0.004)


def test_timeout_zero_without_batching():
    assert effective_timeout(BatchConfig(max_batch_size=1, latency_slo=0.1), ExecTimeModel(), 1000) == 0.0


def test_admit_without_slo_only_bounds_the_queue():
    config = BatchConfig(max_batch_size=4)
    assert admit(10, 0, config, ExecTimeModel(), max_queue=100).admitted
    refused = admit(100, 0, config, ExecTimeModel(), max_queue=100)
    assert not refused.admitted and "queue full" in refused.reason


def test_admit_refuses_when_the_queue_ahead_cannot_finish_within_slo():
    config = BatchConfig(max_batch_size=4, latency_slo=0.1)
    model = fitted([(4, 0.02), (1, 0.008)])
    assert admit(8, 0.0, config, model, 1000, arrival_rate=1000).admitted  # 2 batches + own: 0.06
    decision = admit(20, 0.01, config, model, 1000, arrival_rate=1000)  # 5 batches ahead: 0.13
    assert isinstance(decision, Admission) and not decision.admitted
    assert "exceeds latency_slo 100ms" in decision.reason


def test_admit_fills_only_its_share_of_the_slo_while_requests_run_late():
    config = BatchConfig(max_batch_size=4, latency_slo=0.1)
    model = fitted([(4, 0.02), (1, 0.008)])
    # two full batches ahead (40 ms), then its own, filled by the 40 arrivals meanwhile: 60 ms
    assert admit(8, 0.0, config, model, 1000, arrival_rate=1000, share=1.0).admitted
    decision = admit(8, 0.0, config, model, 1000, arrival_rate=1000, share=0.4)
    assert not decision.admitted and decision.predicted == pytest.approx(0.060)
    assert "exceeds 40% of latency_slo 100ms" in decision.reason and "ran past the SLO" in decision.reason
    assert admit(0, 0.0, config, model, 1000, arrival_rate=1000, share=0.4).admitted  # idle: always


def test_admit_prices_its_batch_at_the_size_it_will_start_with():
    config = BatchConfig(max_batch_size=8, latency_slo=0.2)
    model = fitted([(n, 0.02 * n) for n in range(1, 9)] * 3)
    quiet = admit(2, 0.05, config, model, 1000, arrival_rate=1.0)  # nobody else comes: a batch of 3
    assert quiet.predicted == pytest.approx(0.05 + 0.06)
    busy = admit(2, 0.05, config, model, 1000, arrival_rate=100.0)  # 5 more arrive within 50 ms: 8
    assert busy.predicted == pytest.approx(0.05 + 0.16)


def test_no_request_admitted_behind_a_running_batch_ends_past_the_slo():
    # t(n) = 20 ms x n, b = 8, SLO 200 ms, a batch of 8 running (160 ms), arrivals every 5 ms.
    config = BatchConfig(max_batch_size=8, latency_slo=0.2)
    model = fitted([(n, 0.02 * n) for n in range(1, 9)] * 3)
    queued = []
    for k in range(32):
        now = 0.005 * k
        if admit(len(queued), 0.16 - now, config, model, 1000, arrival_rate=200.0).admitted:
            queued.append(now)
    end = 0.16 + 0.02 * len(queued)  # the next batch holds them all; answers come together
    assert queued and all(end - arrived <= 0.2 + 1e-9 for arrived in queued)


def test_exec_model_median_ignores_a_cold_first_batch():
    model = fitted([(1, 0.050)] + [(1, 0.001)] * 4)
    assert model.predict(1) == pytest.approx(0.001)


def test_idle_instance_always_admits_even_with_a_pessimistic_estimate():
    config = BatchConfig(max_batch_size=4, latency_slo=0.05)
    model = fitted([(1, 0.2)])
    assert admit(0, 0.0, config, model, 1000, arrival_rate=100).admitted
    assert not admit(3, 0.0, config, model, 1000, arrival_rate=100).admitted


def test_admit_accepts_everything_before_any_measurement():
    assert admit(500, 0, BatchConfig(4, None, 0.01), ExecTimeModel(), 1000).admitted


def test_rate_meter_decays():
    meter = RateMeter(tau=1.0)
    for i in range(100):
        meter.add(i * 0.01)
    assert 55 < meter.rate(1.0) < 70
    assert meter.rate(10.0) < 0.01


def test_table_prior_interpolates_and_extrapolates():
    from batcher.policy import table_prior

    prior = table_prior({1: 0.002, 8: 0.009})
    assert prior(1) == pytest.approx(0.002) and prior(4) == pytest.approx(0.005)
    assert prior(16) == pytest.approx(0.018) and table_prior({8: 0.008})(2) == pytest.approx(0.008)
    model = ExecTimeModel(prior=prior)
    assert model.predict(4) == pytest.approx(0.005)
    model.observe(4, 0.001)
    assert model.predict(4) == pytest.approx(0.001)


def test_a_size_seen_once_or_twice_is_predicted_from_the_well_seen_sizes():
    model = ExecTimeModel()
    for n, seconds in ((1, 0.001), (4, 0.002), (8, 0.003)):
        for _ in range(10):
            model.observe(n, seconds)
    model.observe(32, 0.040)  # one slow batch during a burst
    assert model.predict(32) == pytest.approx(0.00985, rel=0.01)  # the line through 1, 4, 8, not 40 ms
    for _ in range(2):
        model.observe(32, 0.012)
    assert model.predict(32) == pytest.approx(0.012)  # seen three times: its own median


def test_predictions_are_remembered_only_until_the_next_batch_or_prior():
    model = ExecTimeModel(prior=lambda n: 0.001 * n)
    assert model.predict(8) == 0.008 and model.predict(8) == 0.008
    model.prior = lambda n: 0.002 * n  # a new prior is used at once
    assert model.predict(8) == 0.016
    model.observe(8, 0.5)  # a batch replaces what was predicted before it
    assert model.predict(8) == 0.5
    for _ in range(3):
        model.observe(8, 0.1)
    assert model.predict(8) == 0.1


def test_rate_meter_add_returns_the_rate_with_the_arrival_counted():
    meter = RateMeter(tau=1.0)
    assert meter.add(10.0) == 1.0
    assert abs(meter.add(10.0) - 2.0) < 1e-12 and abs(meter.rate(10.0) - 2.0) < 1e-12
