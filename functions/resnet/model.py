"""ResNet-style image classifier for 3x64x64 images: a stem and four residual stages, 10 classes, seed 0."""

import torch
from torch import nn

CHANNELS, SIZE = 3, 64
CLASSES = 10


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual join (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.down is None else self.down(x)
        return self.relu(out + shortcut)


class ResNetSmall(nn.Module):
    """Stem, stages of 32/64/128/256 channels, global average pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(CHANNELS, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        widths = (32, 64, 128, 256)
        self.stages = nn.Sequential(*(BasicBlock(cin, cout, 1 if i == 0 else 2)
                                      for i, (cin, cout) in enumerate(zip((32,) + widths, widths))))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(256, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def build_model() -> nn.Module:
    """The model in eval mode with weights from seed 0."""
    torch.manual_seed(0)
    return ResNetSmall().eval()


def example_input(batch_size: int) -> torch.Tensor:
    """A batch of images for profiling."""
    return torch.randn(batch_size, CHANNELS, SIZE, SIZE)
