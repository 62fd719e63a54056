"""Keeping freed memory in the process: a large freed buffer stays in the heap for the next batch instead
of being unmapped (and faulted in afresh on the next call)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, sys
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "on":
    from faas_infer.memory import retain_freed_memory
    assert retain_freed_memory()
buffer = torch.empty(16 << 20).fill_(1.0)  # 64 MiB: above glibc's largest dynamic mmap threshold
del buffer
print(libc.mallinfo2().fordblks >> 20)  # MiB free inside the heap, kept for reuse
"""


def kept_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_a_freed_64mib_buffer_stays_in_the_heap_only_when_retained():
    assert kept_mib("off") < 32  # by default it was mmapped and went back to the OS when freed
    assert kept_mib("on") >= 64
