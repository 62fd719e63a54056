"""MLP classifier. Input: {"features": [256 numbers]}, or the 256 numbers as raw little-endian float32 (1,024
bytes, Content-Type application/octet-stream). Output: {"class": int, "score": float}."""

import torch

from batcher.handlers import float_bytes, float_row, join_rows, map_valid, require

from .model import FEATURES, build_model


def load():
    """Build the model once per process."""
    return build_model()


def parse(request):
    if (request.header("Content-Type") or "").startswith("application/octet-stream"):
        return float_bytes(request.body, FEATURES)
    return float_row(require(request.json(), "features", list), FEATURES, "features")


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            x = torch.frombuffer(join_rows(rows), dtype=torch.float32).view(len(rows), FEATURES)
            score, cls = model(x).softmax(dim=1).max(dim=1)
        return [{"class": c, "score": round(s, 6)} for c, s in zip(cls.tolist(), score.tolist())]

    return map_valid(requests, parse, run)
