"""Predicted versus measured latency over batch sizes, drawn to a PNG (matplotlib, Agg backend)."""

from __future__ import annotations


def draw(path: str, title: str, batches: list[int], predicted: list[float], measured: list[float]) -> None:
    """Write a log-log plot of predicted and measured milliseconds per batch to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(batches, [s * 1e3 for s in predicted], "o-", label="predicted (COP)")
    ax.plot(batches, [s * 1e3 for s in measured], "s--", label="measured (whole model)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per batch (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
