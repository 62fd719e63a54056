"""MLP classifier. Input: {"features": [256 numbers]}. Output: {"class": int, "score": float}."""

import torch

from batcher.handlers import float_row, join_rows, map_valid, require

from .model import FEATURES, build_model


def load():
    """Build the model once per process."""
    return build_model()


def parse(request):
    return float_row(require(request.json(), "features", list), FEATURES, "features")


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            x = torch.frombuffer(join_rows(rows), dtype=torch.float32).view(len(rows), FEATURES)
            score, cls = model(x).softmax(dim=1).max(dim=1)
        return [{"class": c, "score": round(s, 6)} for c, s in zip(cls.tolist(), score.tolist())]

    return map_valid(requests, parse, run)
