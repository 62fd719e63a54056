"""TextCNN sentiment classifier. Input: {"tokens": [ints]} or {"text": str}. Output: {"class", "score"}."""

import torch

from batcher import BadInput
from batcher.handlers import map_valid

from .model import SEQ_LEN, VOCAB, build_model


def load():
    """Build the model once per process."""
    return build_model()


def parse(request):
    doc = request.json()
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        ids = [sum(map(ord, w)) % (VOCAB - 1) + 1 for w in doc["text"].lower().split()]
    elif isinstance(doc, dict) and isinstance(doc.get("tokens"), list):
        ids = doc["tokens"]
        if not all(isinstance(t, int) and 0 <= t < VOCAB for t in ids):
            raise BadInput(f"'tokens' must be integers in [0, {VOCAB})")
    else:
        raise BadInput('expected {"tokens": [int, ...]} or {"text": "..."}')
    return torch.tensor((list(ids) + [0] * SEQ_LEN)[:SEQ_LEN], dtype=torch.long)


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            probs = model(torch.stack(rows)).softmax(dim=1)
        score, cls = probs.max(dim=1)
        return [{"class": int(c), "score": round(float(s), 6)} for c, s in zip(cls, score)]

    return map_valid(requests, parse, run)
