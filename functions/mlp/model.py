"""MLP classifier: 256 features -> 4 x 1024 hidden -> 10 classes, fixed-seed weights."""

import torch
from torch import nn

FEATURES = 256
CLASSES = 10


def build_model() -> nn.Module:
    """The model in eval mode with weights from seed 0."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = FEATURES
    for _ in range(4):
        layers += [nn.Linear(width, 1024), nn.ReLU()]
        width = 1024
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers).eval()


def example_input(batch_size: int) -> torch.Tensor:
    """A batch of inputs for profiling."""
    return torch.randn(batch_size, FEATURES)
