"""How many copies of an operator's weights to rotate through when timing it alone, so its weights are as
cold as they are inside its model.

Torch-free. Timed alone, an operator is called again and again on the same weights, so they stay in the
CPU's caches. Served, a model runs its layers one after another, and between two calls of one layer every
other layer's weights pass through the caches. Timed hot, weights that do not stay cached in the model look
free. Measured here with the MLP example (three 4 MiB linear layers in 13 MiB of weights, on a VM with
1 MiB of L2 a core), in three runs timing the layers and the model back to back at batch 1-3 and 1-2
threads: the layers' hot times summed to 0.29-0.80 of the whole model (median 0.55), and missed that batch
2 and 3 can run slower than batch 4 (the small-batch kernel reads the weights once per row); rotated
through three copies each they summed to 0.51-1.15 (median 0.81), the slow batches included. How much of
the model's weights stay cached changes with the neighbours' use of the shared L3, so the remaining spread
is the machine's.

So the distance is reproduced, not the cache sizes guessed: whatever the machine's caches (and its
neighbours' share of them) do to the model's weights, they do to the copies. Activations are not counted:
each operator's input was written just before it runs, in the model as in the timing loop. Embedding tables
neither count nor rotate: a lookup reads a few rows, not the table.
"""

from __future__ import annotations

# Operators holding fewer weight bytes than this are timed hot: their weights are a small part of what
# they read (a batch norm's, a small convolution's), and copying them hundreds of times buys nothing.
MIN_BYTES = 64 * 1024
# Copies at most, and bytes of copies at most: past a few hundred MiB every cache is missed anyway.
MAX_COPIES = 64
MAX_BYTES = 256 * 1024 * 1024
# An operator already timed rotating through m copies stands for the same operator at n copies when m and n
# are within this ratio. The copy count follows the whole model's weight bytes, so a second function of an
# architecture (a new head, a few more classes) moves it by one here and there, and without this its
# layers would be timed again for a cache distance a third longer or shorter.
NEAR = 1.5


def near(m: int, n: int) -> bool:
    """Whether timings taken rotating through ``m`` copies stand for ``n`` copies (``NEAR``)."""
    return max(m, n) <= NEAR * min(m, n)


def copies(model_bytes: int, op_bytes: int) -> int:
    """Copies of an operator holding ``op_bytes`` of weights, in a model holding ``model_bytes``, to rotate
    through so each copy is reused after about ``model_bytes`` (the nearest multiple of ``op_bytes``; 1:
    time it as it is)."""
    if op_bytes < MIN_BYTES:
        return 1
    return max(1, min(MAX_COPIES, round(model_bytes / op_bytes), MAX_BYTES // op_bytes))
