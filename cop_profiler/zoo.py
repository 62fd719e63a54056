"""Extra architectures for the accuracy benchmark, built in code with fixed seeds (nothing downloaded).

Each builder returns ``(model, example_input)`` so it works as a ``module:function`` model reference, e.g.
``cop_profiler.zoo:vgg``. They were not used while the profiler was developed.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Built = tuple[nn.Module, Callable[[int], torch.Tensor]]


def _images(channels: int, size: int) -> Callable[[int], torch.Tensor]:
    return lambda b: torch.randn(b, channels, size, size)


def vgg() -> Built:
    """VGG-style CNN on 3x32x32: stages of two 3x3 convs (32/64/128 channels) with max-pooling."""
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    cin = 3
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))
    return model.eval(), _images(3, 32)


class _GRUClassifier(nn.Module):
    """Embedding -> bidirectional GRU -> mean over time -> linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3000, 96)
        self.gru = nn.GRU(96, 128, batch_first=True, bidirectional=True)
        self.head = nn.Linear(256, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class scores for a batch of token ids."""
        out, _ = self.gru(self.embed(tokens))
        return self.head(out.mean(dim=1))


def gru() -> Built:
    """Bidirectional GRU text classifier over 24 tokens."""
    torch.manual_seed(2)
    return _GRUClassifier().eval(), lambda b: torch.randint(0, 3000, (b, 24))


class _EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer written out (attention by matmul/softmax, GELU feed-forward)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One attention and feed-forward step over (batch, seq, dim)."""
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.ff(self.norm2(x))


class _Encoder(nn.Module):
    """Token embedding plus positions, two encoder layers, mean-pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4000, 128)
        self.pos = nn.Parameter(torch.randn(1, 32, 128) * 0.02)
        self.layers = nn.Sequential(_EncoderLayer(128, 4), _EncoderLayer(128, 4))
        self.head = nn.Linear(128, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class scores for a batch of token ids."""
        return self.head(self.layers(self.embed(tokens) + self.pos).mean(dim=1))


def transformer() -> Built:
    """Two pre-norm transformer encoder layers (dim 128, 4 heads) over 32 tokens."""
    torch.manual_seed(3)
    return _Encoder().eval(), lambda b: torch.randint(0, 4000, (b, 32))


def _dw_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


def mobilenet() -> Built:
    """MobileNet-v1-style CNN on 3x64x64: depthwise-separable blocks, global pooling, linear head."""
    torch.manual_seed(4)
    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]
    model = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                          *(_dw_block(a, b, s) for a, b, s in plan),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10))
    return model.eval(), _images(3, 64)


ZOO = {"vgg": "cop_profiler.zoo:vgg", "gru": "cop_profiler.zoo:gru",
       "transformer": "cop_profiler.zoo:transformer", "mobilenet": "cop_profiler.zoo:mobilenet"}
