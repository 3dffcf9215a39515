"""The seed's loss: 0.9*L1(S,T) + 0.1*L1(S,GT) + 0.005*Perceptual(S,GT)."""

from __future__ import annotations

import pytest
import torch

from training.losses import DistillLoss, LossWeights, distill_loss


def fake_perceptual(s: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return (s - gt).pow(2).mean() * 3.0


def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))  # type: ignore[return-value]


def test_seed_weights() -> None:
    w = LossWeights()
    assert (w.teacher, w.gt, w.perceptual) == (0.9, 0.1, 0.005)
    assert w.describe() == "0.9*L1(S,T) + 0.1*L1(S,GT) + 0.005*Perceptual(S,GT)"


def test_total_is_the_weighted_sum() -> None:
    s, t, gt = tensors()
    total, parts = distill_loss(s, gt, teacher=t, perceptual=fake_perceptual, weights=LossWeights())
    l1_t = (s - t).abs().mean()
    l1_gt = (s - gt).abs().mean()
    perc = fake_perceptual(s, gt)
    assert total.item() == pytest.approx((0.9 * l1_t + 0.1 * l1_gt + 0.005 * perc).item())
    assert parts == pytest.approx(
        {"teacher": l1_t.item(), "gt": l1_gt.item(), "perceptual": perc.item()}
    )


def test_inactive_terms_are_skipped_and_others_keep_their_weight() -> None:
    s, _, gt = tensors()
    weights = LossWeights(teacher=0.0, perceptual=0.0)
    total, parts = distill_loss(s, gt, teacher=None, perceptual=None, weights=weights)
    assert set(parts) == {"gt"}
    assert total.item() == pytest.approx(0.1 * (s - gt).abs().mean().item())
    assert weights.describe() == "0.1*L1(S,GT)"


def test_missing_input_for_an_active_term() -> None:
    s, _, gt = tensors()
    with pytest.raises(ValueError, match="teacher"):
        distill_loss(s, gt, teacher=None, perceptual=fake_perceptual, weights=LossWeights())
    with pytest.raises(ValueError, match="VGG16"):
        distill_loss(s, gt, teacher=s, perceptual=None, weights=LossWeights())


def test_gradient_flows_to_the_student_only() -> None:
    s, t, gt = tensors()
    s.requires_grad_(True)
    total, _ = DistillLoss(LossWeights(perceptual=0.0))(s, gt, t)
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_shape_mismatch() -> None:
    s, _, gt = tensors()
    with pytest.raises(ValueError, match="ground truth"):
        distill_loss(s[:, :, :4], gt, teacher=None, perceptual=None, weights=LossWeights(0, 1, 0))
