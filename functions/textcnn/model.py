"""TextCNN (Kim, 2014): embedding 128, parallel convolutions of width 3/4/5 x 100, max-pool, 2 classes."""

import torch
from torch import nn

VOCAB = 5000
SEQ_LEN = 64
CLASSES = 2


class TextCNN(nn.Module):
    """Three parallel convolution branches joined by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 128)
        self.branches = nn.ModuleList(nn.Conv1d(128, 100, k) for k in (3, 4, 5))
        self.head = nn.Linear(300, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)
        pooled = [torch.relu(conv(x)).amax(dim=2) for conv in self.branches]
        return self.head(torch.cat(pooled, dim=1))


def build_model() -> nn.Module:
    """The model in eval mode with weights from seed 0."""
    torch.manual_seed(0)
    return TextCNN().eval()


def example_input(batch_size: int) -> torch.Tensor:
    """A batch of token ids for profiling."""
    return torch.randint(0, VOCAB, (batch_size, SEQ_LEN))
