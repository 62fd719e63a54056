"""TextCNN sentiment classifier. Input: {"tokens": [ints]} or {"text": str}. Output: {"class", "score"}."""

import torch

from batcher import BadInput
from batcher.handlers import int_row, join_rows, map_valid

from .model import SEQ_LEN, VOCAB, build_model


def load():
    """Build the model once per process."""
    return build_model()


def parse(request):
    doc = request.json()
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        ids = [sum(map(ord, w)) % (VOCAB - 1) + 1 for w in doc["text"].lower().split()]
    elif isinstance(doc, dict) and "tokens" in doc:
        ids = doc["tokens"]
    else:
        raise BadInput('expected {"tokens": [int, ...]} or {"text": "..."}')
    return int_row(ids, SEQ_LEN, "tokens", 0, VOCAB)


def handle_batch(model, requests):
    """Classify every valid request in one forward pass."""
    def run(rows):
        with torch.inference_mode():
            x = torch.frombuffer(join_rows(rows), dtype=torch.long).view(len(rows), SEQ_LEN)
            score, cls = model(x).softmax(dim=1).max(dim=1)
        return [{"class": c, "score": round(s, 6)} for c, s in zip(cls.tolist(), score.tolist())]

    return map_valid(requests, parse, run)
