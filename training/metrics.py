"""Image quality metrics, always computed on RGB with data range 1.

* PSNR: ``10 log10(1 / MSE)`` over all pixels and the three channels of one image.
* SSIM: ``pytorch_msssim.ssim`` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
  K1 0.01, K2 0.03, valid filtering), computed per channel and averaged over RGB.

Images are compared after quantisation to 8 bits (:func:`to_uint8`) wherever they are
what a viewer would see, so scores describe the frames sharpcam actually sends.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ssim as _ssim


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``HxWx3 uint8`` -> ``(1, 3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` float in ``[0, 1]`` -> ``HxWx3 uint8`` (clamped, rounded)."""
    array = batch[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    return array.cpu().numpy()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``(N, 3, H, W)`` tensors in ``[0, 1]``; shape ``(N,)``.

    Identical images give ``inf``.
    """
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (RGB mean) of ``(N, 3, H, W)`` tensors in ``[0, 1]``; shape ``(N,)``.

    Images must be at least 11 pixels on each side.
    """
    return _ssim(pred.float(), target.float(), data_range=1.0, size_average=False)


def image_scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(PSNR dB, SSIM)`` of two ``HxWx3 uint8`` images."""
    p, t = to_tensor(pred), to_tensor(target)
    return float(psnr(p, t)[0]), float(ssim(p, t)[0])
