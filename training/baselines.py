"""Classical baselines a learned sharpener has to beat."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from training.metrics import image_scores
from training.modes import DegradationLike


@dataclass(frozen=True)
class UnsharpMask:
    """``out = in + amount * (in - GaussianBlur(in, sigma))``, clipped to 8 bits.

    Args:
        sigma: Gaussian standard deviation in pixels.
        amount: how much of the detail layer is added back.
    """

    sigma: float = 1.0
    amount: float = 1.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Sharpen an ``HxWx3 uint8`` image."""
        src = image.astype(np.float32)
        blurred = cv2.GaussianBlur(src, (0, 0), self.sigma)
        out = src + self.amount * (src - blurred)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def __str__(self) -> str:
        return f"unsharp mask (sigma {self.sigma:g}, amount {self.amount:g})"


def tune_unsharp(
    images: Sequence[np.ndarray],
    degradation: DegradationLike,
    *,
    sigmas: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0),
    amounts: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    crop: int = 512,
) -> UnsharpMask:
    """The unsharp mask with the best mean PSNR on (centre crops of) training images.

    Tuned on training images only, so the baseline is fair without touching the test set.
    """
    pairs = []
    for image in images:
        h, w = image.shape[:2]
        y, x = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        gt = np.ascontiguousarray(image[y : y + crop, x : x + crop])
        pairs.append((degradation(gt), gt))
    best, best_psnr = UnsharpMask(), -np.inf
    for sigma, amount in itertools.product(sigmas, amounts):
        candidate = UnsharpMask(sigma, amount)
        score = float(np.mean([image_scores(candidate(d), g)[0] for d, g in pairs]))
        if score > best_psnr:
            best, best_psnr = candidate, score
    return best
