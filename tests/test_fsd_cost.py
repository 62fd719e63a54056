"""The FSD-style cost model."""

from __future__ import annotations

import pytest

from fsd.channel import Usage
from fsd.cost import Prices, run_cost
from fsd.errors import ConfigError


def test_cost_adds_gb_seconds_invocations_and_requests():
    prices = Prices()
    usage = Usage(10, 1000, {"send": 1_000_000, "receive": 1_000_000, "delete": 3})
    cost = run_cost(prices, "redis", [(1024, 2.0), (512, 4.0)], usage, examples=4)
    assert cost.gb_seconds == pytest.approx(4.0)
    assert cost.compute_usd == pytest.approx(4.0 * 0.0000166667)
    assert cost.invocation_usd == pytest.approx(2 * 0.2e-6)
    assert cost.channel_usd == pytest.approx(0.80)
    assert cost.per_example_usd == pytest.approx(cost.total_usd / 4)


def test_same_requests_cost_more_on_object_storage():
    queue = run_cost(Prices(), "redis", [], Usage(requests={"send": 100, "receive": 100}), 1)
    objects = run_cost(Prices(), "s3", [], Usage(requests={"put": 100, "get": 100}), 1)
    assert objects.channel_usd == pytest.approx(100 * 5e-6 + 100 * 0.4e-6) and objects.channel_usd > queue.channel_usd


def test_prices_parse():
    assert Prices.parse('{"gb_second": 1e-5}').gb_second == 1e-5 and Prices.parse("") == Prices()
    with pytest.raises(ConfigError, match="unknown price 'egress'"):
        Prices.parse('{"egress": 1}')
    with pytest.raises(ConfigError, match="FSD_PRICES='nope': must be a JSON object"):
        Prices.parse("nope")
