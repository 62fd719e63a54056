"""MLP classifier. Input: {"features": [256 numbers]}. Output: {"class": int, "score": float}."""

import torch

from batcher.handlers import map_valid, require
from batcher import BadInput

from .model import FEATURES, build_model


def load():
    """Build the model once per process."""
    return build_model()


def parse(request):
    features = require(request.json(), "features", list)
    if len(features) != FEATURES:
        raise BadInput(f"'features' must hold {FEATURES} numbers, got {len(features)}")
    try:
        return torch.tensor(features, dtype=torch.float32)
    except (TypeError, ValueError):
        raise BadInput("'features' must hold only numbers") from None


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            probs = model(torch.stack(rows)).softmax(dim=1)
        score, cls = probs.max(dim=1)
        return [{"class": int(c), "score": round(float(s), 6)} for c, s in zip(cls, score)]

    return map_valid(requests, parse, run)
