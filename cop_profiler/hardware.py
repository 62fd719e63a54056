"""Hardware identity (CPU model and count, GPU names from NVML), so profiles of different machines never mix.

Torch-free. ``gpus()`` never raises: without a GPU or without NVML it returns no devices and a one-line
notice for the user.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as NVML reports it."""

    # NVML device index.
    index: int
    # Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    name: str
    # Total device memory in bytes.
    memory_total: int
    # Free device memory in bytes when queried.
    memory_free: int


@dataclass(frozen=True)
class GpuReport:
    """The GPUs found, or why none were."""

    # Devices found (empty without a GPU or NVML).
    devices: tuple[GpuDevice, ...]
    # One-line notice for the user when there are none ("" when there are).
    notice: str = ""


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_id() -> str:
    """Hardware id of CPU profiles: model and count, e.g. ``Intel(R) Xeon(R) Processor x2``."""
    return f"{cpu_model()} x{cpu_count()}"


def gpus() -> GpuReport:
    """GPUs visible through NVML; never raises."""
    try:
        import pynvml
    except ImportError:
        return GpuReport((), "no GPU: nvidia-ml-py (pynvml) is not installed; profiling CPU only")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuReport((), f"no GPU: NVML unavailable ({exc}); profiling CPU only")
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(GpuDevice(index, name, int(mem.total), int(mem.free)))
    except pynvml.NVMLError as exc:
        return GpuReport((), f"no GPU: NVML query failed ({exc}); profiling CPU only")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    if not devices:
        return GpuReport((), "no GPU: NVML found no devices; profiling CPU only")
    return GpuReport(tuple(devices))


def hardware_id(device: str = "cpu", gpu_name: str | None = None) -> str:
    """Key of profiles for ``device``: the CPU id, plus the GPU name for ``cuda`` profiles."""
    if device == "cpu":
        return cpu_id()
    if gpu_name is None:
        report = gpus()
        if not report.devices:
            return f"{cpu_id()} | no-gpu"
        gpu_name = report.devices[0].name
    return f"{cpu_id()} | {gpu_name}"
