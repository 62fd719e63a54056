"""A batched torch function. Input: {"features": [8 numbers]}. Output: {"class": int, "score": float}.

load() runs once per process (its time is the instance's cold start); handle_batch gets up to
max_batch_size requests at once and returns one output per request, in order. An output may be bytes,
text, a JSON-able value, a batcher.Response, or an exception for that request alone (BadInput -> 400).
"""

import torch
from torch import nn

from batcher import BadInput
from batcher.handlers import map_valid, require

FEATURES = 8


def load():
    """Build (or load from a file shipped with the function) the model once."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 3)).eval()


def parse(request):
    """One request's input as a tensor; BadInput fails only this request."""
    features = require(request.json(), "features", list)
    if len(features) != FEATURES:
        raise BadInput(f"'features' must hold {FEATURES} numbers, got {len(features)}")
    return torch.tensor(features, dtype=torch.float32)


def handle_batch(model, requests):
    """Run the model once on every valid request of the batch."""
    def run(rows):
        with torch.inference_mode():
            probs = model(torch.stack(rows)).softmax(dim=1)
        score, cls = probs.max(dim=1)
        return [{"class": int(c), "score": float(s)} for c, s in zip(cls, score)]

    return map_valid(requests, parse, run)
