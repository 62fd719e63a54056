"""``faas_infer.loglevel``: what ``LOG_LEVEL`` may say."""

from __future__ import annotations

import logging

import pytest

from faas_infer.loglevel import parse_level


@pytest.mark.parametrize("text, level", [("info", "INFO"), (" debug\n", "DEBUG"), ("Warning", "WARNING"),
                                         ("warn", "WARN"), ("FATAL", "FATAL"), ("notset", "NOTSET")])
def test_every_name_logging_takes_is_accepted_and_given_as_logging_takes_it(text, level):
    # WARN and FATAL worked before LOG_LEVEL was checked; " info" passed the check, then failed basicConfig.
    assert parse_level(text) == level
    logging.getLogger("loglevel-test").setLevel(parse_level(text))


@pytest.mark.parametrize("text", ["loud", "", "10", "INFO,DEBUG"])
def test_anything_else_is_refused_naming_it_and_the_levels(text):
    with pytest.raises(ValueError) as info:
        parse_level(text)
    assert str(info.value) == (f"{text!r}: not a logging level (one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
                               "in any case)")
