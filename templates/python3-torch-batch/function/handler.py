"""A batched torch function. Input: {"features": [8 numbers]}. Output: {"class": int, "score": float}.

load() runs once per process (its time is the instance's cold start); handle_batch gets up to
max_batch_size requests at once and returns one output per request, in order. An output may be bytes,
text, a JSON-able value, a batcher.Response, or an exception for that request alone (BadInput -> 400).
"""

import torch
from torch import nn

from batcher.handlers import float_row, join_rows, map_valid, require

FEATURES = 8
# The GPU when torch sees one (the python3-torch-batch-gpu image on a GPU share), else the CPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load():
    """Build (or load from a file shipped with the function) the model once, on DEVICE."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 3)).eval().to(DEVICE)


def parse(request):
    """One request's input as a row of float32 numbers; BadInput fails only this request."""
    return float_row(require(request.json(), "features", list), FEATURES, "features")


def handle_batch(model, requests):
    """Run the model once on every valid request of the batch."""
    def run(rows):
        # One tensor for the whole batch, and plain Python numbers out: no torch call per request.
        with torch.inference_mode():
            x = torch.frombuffer(join_rows(rows), dtype=torch.float32).view(len(rows), FEATURES).to(DEVICE)
            score, cls = model(x).softmax(dim=1).max(dim=1)
        return [{"class": c, "score": s} for c, s in zip(cls.tolist(), score.tolist())]

    return map_valid(requests, parse, run)
