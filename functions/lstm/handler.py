"""LSTM text classifier. Input: {"tokens": [ints]} or {"text": str}. Output: {"class", "score"}."""

import torch

from batcher.handlers import join_rows, map_valid

from .model import SEQ_LEN, build_model, tokens_from


def load():
    """Build the model once per process."""
    return build_model()


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            x = torch.frombuffer(join_rows(rows), dtype=torch.long).view(len(rows), SEQ_LEN)
            score, cls = model(x).softmax(dim=1).max(dim=1)
        return [{"class": c, "score": round(s, 6)} for c, s in zip(cls.tolist(), score.tolist())]

    return map_valid(requests, lambda r: tokens_from(r.json()), run)
