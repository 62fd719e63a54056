"""Unit parsing: durations as the watchdog accepts them, CPU and memory quantities as Kubernetes writes them."""

import pytest

from faas_infer.units import format_duration, parse_cpu, parse_duration, parse_memory


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("250ms", 0.25), ("2.5", 2.5), ("1m30s", 90),
                                           ("1h", 3600), ("0", 0), (7, 7.0), ("500us", 0.0005)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "ten", "10x", "-1s", "1s2"])
def test_bad_durations_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


def test_cpu_and_memory_quantities():
    assert parse_cpu("500m") == 0.5 and parse_cpu("2") == 2.0 and parse_cpu(1.5) == 1.5
    assert parse_memory("256Mi") == 256 * 1024**2 and parse_memory("1Gi") == 1024**3
    assert parse_memory("128M") == 128 * 1000**2 and parse_memory("4096") == 4096
    with pytest.raises(ValueError, match="not a CPU quantity"):
        parse_cpu("lots")
    with pytest.raises(ValueError, match="not a memory quantity"):
        parse_memory("1 gallon")
    with pytest.raises(ValueError, match="a memory quantity must be finite"):  # was an OverflowError
        parse_memory("9" * 400 + "Mi")


def test_format_duration():
    assert format_duration(0.25) == "250ms" and format_duration(1.5) == "1.5s"
