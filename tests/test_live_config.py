"""Live batch config fields: overrides, unsetting, and errors that name the field."""

from __future__ import annotations

import pytest

from batcher import live_config
from batcher.policy import BatchConfig

BASE = BatchConfig(8, 0.01, 0.5)


def test_missing_fields_keep_the_base_and_empty_ones_unset():
    assert live_config.parse({}, BASE) == BASE
    assert live_config.parse({b"max_batch_size": b"32", b"latency_slo": b""}, BASE) == BatchConfig(32, 0.01, None)
    assert live_config.parse({"batch_timeout": "none", "other": "x"}, BASE) == BatchConfig(8, None, 0.5)


def test_fields_round_trip():
    assert live_config.parse(live_config.to_fields(BatchConfig(4, None, 0.25)), BASE) == BatchConfig(4, None, 0.25)


@pytest.mark.parametrize("fields, message", [({"max_batch_size": "x"}, "max_batch_size='x'"),
                                              ({"max_batch_size": "0"}, "max_batch_size=0"),
                                              ({"batch_timeout": "-1"}, "batch_timeout=-1")])
def test_bad_values_raise_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        live_config.parse(fields, BASE)
