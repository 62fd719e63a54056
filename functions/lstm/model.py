"""LSTM text classifier: embedding 128, 2 x LSTM 256, 4 classes, sequences of 32 tokens, seed 0."""

import torch
from torch import nn

VOCAB = 5000
SEQ_LEN = 32
CLASSES = 4


class LSTMClassifier(nn.Module):
    """Embedding -> 2-layer LSTM -> linear head on the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 128)
        self.lstm = nn.LSTM(128, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


def build_model() -> nn.Module:
    """The model in eval mode with weights from seed 0."""
    torch.manual_seed(0)
    return LSTMClassifier().eval()


def example_input(batch_size: int) -> torch.Tensor:
    """A batch of token ids for profiling."""
    return torch.randint(0, VOCAB, (batch_size, SEQ_LEN))


def tokens_from(doc):
    """Token ids (int64 ``array``) from {"tokens": [ints]} or {"text": str} (hashed words), padded or cut
    to SEQ_LEN."""
    from batcher import BadInput
    from batcher.handlers import int_row

    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        ids = [sum(map(ord, w)) % (VOCAB - 1) + 1 for w in doc["text"].lower().split()]
    elif isinstance(doc, dict) and "tokens" in doc:
        ids = doc["tokens"]
    else:
        raise BadInput('expected {"tokens": [int, ...]} or {"text": "..."}')
    return int_row(ids, SEQ_LEN, "tokens", 0, VOCAB)
