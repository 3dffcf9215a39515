"""Tiny students for training tests: a perturbed residual student and a scale-2 module.

The ``x2`` students of :mod:`training.students` are written on another branch; tests of the
x2 path use :class:`TinyX2`, which follows the agreed interface (an int attribute
``scale``; forward ``(N,3,H,W) -> (N,3,2H,2W)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.students import ResidualStudent


def trained_like(seed: int, width: int = 16, depth: int = 2) -> ResidualStudent:
    """A residual student whose weights are perturbed away from the identity."""
    torch.manual_seed(seed)
    model = ResidualStudent(width=width, depth=depth)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


class TinyX2(nn.Module):
    """Bilinear x2 plus a learned pixel-shuffled correction: ``(N,3,H,W) -> (N,3,2H,2W)``."""

    scale = 2

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 12, 3, padding=1)
        with torch.no_grad():
            self.body.weight.mul_(0.1)
            self.body.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return up + F.pixel_shuffle(self.body(x), 2)
