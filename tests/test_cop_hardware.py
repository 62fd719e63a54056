"""Hardware identity and GPU discovery (never raises; skips the GPU check without one)."""

from __future__ import annotations

import pytest

from cop_profiler import hardware


def test_cpu_id_names_model_and_count():
    ident = hardware.cpu_id()
    assert ident.endswith(f" x{hardware.cpu_count()}") and len(ident) > 3
    assert hardware.hardware_id("cpu") == ident
    assert hardware.hardware_id("cuda", "GPU Z").endswith(" | GPU Z")


def test_gpus_never_raises_and_explains_absence():
    report = hardware.gpus()
    assert report.devices or report.notice.startswith("no GPU")
    assert "\n" not in report.notice


@pytest.mark.gpu
def test_nvml_reports_memory():
    report = hardware.gpus()
    if not report.devices:
        pytest.skip(report.notice)
    assert report.devices[0].memory_total > 0 and report.devices[0].name
