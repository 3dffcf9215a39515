"""The distillation loss of the seed write-up.

``Loss = 0.9 * L1(S, T) + 0.1 * L1(S, GT) + 0.005 * Perceptual(S, GT)``

with S the student's output, T the teacher's, GT the ground truth. A term whose network is
not available (no teacher, no VGG16) is switched off by giving it weight 0 and ``None`` as
its input; the weights of the other terms are kept as they are (not renormalised: Adam is
invariant to a constant scale of the loss), printed, and recorded in the model card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (seed defaults)."""

    teacher: float = 0.9
    gt: float = 0.1
    perceptual: float = 0.005
    #: The temporal term on consecutive call frames (:func:`temporal_loss`); off by default.
    temporal: float = 0.0

    def active(self) -> dict[str, float]:
        """The terms with a non-zero weight."""
        return {k: v for k, v in vars(self).items() if v}

    def describe(self) -> str:
        """One line, e.g. ``0.9*L1(S,T) + 0.1*L1(S,GT)``."""
        names = {
            "teacher": "L1(S,T)",
            "gt": "L1(S,GT)",
            "perceptual": "Perceptual(S,GT)",
            "temporal": "L1(dS,dGT)",
        }
        return " + ".join(f"{w:g}*{names[k]}" for k, w in self.active().items()) or "(nothing)"


def distill_loss(
    student: torch.Tensor,
    gt: torch.Tensor,
    *,
    teacher: torch.Tensor | None,
    perceptual: PerceptualFn | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted distillation loss and its unweighted parts.

    Args:
        student: ``(N, 3, H, W)`` student output.
        gt: ``(N, 3, H, W)`` ground truth in ``[0, 1]``.
        teacher: ``(N, 3, H, W)`` teacher output, or ``None`` when the teacher is off.
        perceptual: ``fn(student, gt) -> scalar``, or ``None`` when VGG16 is off.
        weights: term weights; a term with weight 0 is skipped.

    Returns:
        ``(total, parts)``: the scalar loss to back-propagate and a dict of the unweighted
        terms (``teacher``, ``gt``, ``perceptual``) that were computed.

    Raises:
        ValueError: a term has a non-zero weight but its input is missing, or shapes differ.
    """
    if student.shape != gt.shape:
        raise ValueError(f"student output {tuple(student.shape)} != ground truth {tuple(gt.shape)}")
    parts: dict[str, torch.Tensor] = {}
    if weights.teacher:
        if teacher is None:
            raise ValueError("the teacher term has weight > 0 but no teacher output was given")
        parts["teacher"] = F.l1_loss(student, teacher)
    if weights.gt:
        parts["gt"] = F.l1_loss(student, gt)
    if weights.perceptual:
        if perceptual is None:
            raise ValueError("the perceptual term has weight > 0 but no VGG16 was given")
        parts["perceptual"] = perceptual(student, gt)
    if not parts and not weights.temporal:
        raise ValueError("all loss weights are zero: nothing to train on")
    total = sum((getattr(weights, k) * v for k, v in parts.items()), student.new_zeros(()))
    return total, {k: float(v.detach()) for k, v in parts.items()}


def temporal_loss(
    previous: torch.Tensor, current: torch.Tensor, gt_previous: torch.Tensor, gt: torch.Tensor
) -> torch.Tensor:
    """``L1((S_t - S_{t-1}) - (GT_t - GT_{t-1}))``: frame-to-frame changes the pristine video
    does not have (flicker) cost, the video's own motion does not.

    Shape:
        all four ``(N, 3, H, W)``: outputs and ground truth of consecutive frames.
    """
    return F.l1_loss(current - previous, gt - gt_previous)


class DistillLoss(nn.Module):
    """Module form of :func:`distill_loss` holding the weights and the perceptual net."""

    def __init__(self, weights: LossWeights, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.perceptual = perceptual

    def forward(
        self, student: torch.Tensor, gt: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return distill_loss(
            student, gt, teacher=teacher, perceptual=self.perceptual, weights=self.weights
        )
