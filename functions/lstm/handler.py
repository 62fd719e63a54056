"""LSTM text classifier. Input: {"tokens": [ints]} or {"text": str}. Output: {"class", "score"}."""

import torch

from batcher.handlers import map_valid

from .model import build_model, tokens_from


def load():
    """Build the model once per process."""
    return build_model()


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            probs = model(torch.stack(rows)).softmax(dim=1)
        score, cls = probs.max(dim=1)
        return [{"class": int(c), "score": round(float(s), 6)} for c, s in zip(cls, score)]

    return map_valid(requests, lambda r: tokens_from(r.json()), run)
