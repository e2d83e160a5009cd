"""Compact CNN for scikit-learn's bundled ``load_digits`` (8x8 grayscale, 10 classes).

This module is loaded as a model *factory* by file path
(``models/digits/model.py:build_model``).  It therefore imports nothing from
the ``edgeopt`` package and does no work at import time: only ``torch`` is
imported, and the module is built when :func:`build_model` is called.

Input:  ``image``  float32 ``[N, 1, 8, 8]``, pixels scaled as
        ``(pixel / 16 - 0.5) / 0.5`` -> values in ``[-1, 1]``.
Output: logits     float32 ``[N, 10]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "build_model", "NUM_CLASSES", "INPUT_SHAPE"]

NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)  # per sample: channels, height, width


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2 -> MaxPool -> Conv-BN-ReLU -> global avg pool -> Linear.

    8x8 -> 8x8 -> 8x8 -> 4x4 -> 4x4 -> 1x1; about 24k parameters.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.features(image)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def build_model() -> nn.Module:
    """Return an untrained :class:`DigitsCNN` in eval mode."""
    model = DigitsCNN()
    model.eval()
    return model
