"""A small MobileNet-style CNN for scikit-learn's ``load_digits``, upsampled to 32x32 (10 classes).

Loaded as a model *factory* by file path (``models/digits32/model.py:build_model``): it imports only
``torch`` and builds nothing at import time.

Input:  ``image``  float32 ``[N, 1, 32, 32]``: the 8x8 digit upsampled bilinearly, pixels scaled as
        ``(pixel / 16 - 0.5) / 0.5`` -> values in ``[-1, 1]``.
Output: ``logits`` float32 ``[N, 10]``.

Layers: a full 3x3 stem, a stride-2 3x3 convolution, then depthwise-separable blocks (3x3 depthwise +
1x1 pointwise, BatchNorm and ReLU after each), global average pooling and a linear classifier.
32x32 -> 16x16 -> 8x8; about 152k parameters at ``width=32``. The pointwise convolutions carry most of
the work, which is where int8 kernels gain on every CPU (x86 with AVX2 or VNNI, Arm).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Digits32Net", "build_model", "NUM_CLASSES", "INPUT_SHAPE"]

NUM_CLASSES = 10
INPUT_SHAPE = (1, 32, 32)  # per sample: channels, height, width


def _conv(inputs: int, outputs: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


def _separable(inputs: int, outputs: int, stride: int = 1) -> list[nn.Module]:
    return [*_conv(inputs, inputs, 3, stride, groups=inputs), *_conv(inputs, outputs, 1)]


class Digits32Net(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv(1, w), *_conv(w, 2 * w, stride=2),
            *_separable(2 * w, 4 * w), *_separable(4 * w, 4 * w),
            *_separable(4 * w, 8 * w, stride=2), *_separable(8 * w, 8 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(image)), 1))


def build_model(width: int = 32) -> nn.Module:
    """An untrained :class:`Digits32Net` in eval mode (``width``: channels of the stem; the rest scale with it)."""
    model = Digits32Net(width)
    model.eval()
    return model
