"""The modes of a sharpcam model, and the tiers it is made in.

* ``restore``: same size in and out (scale 1): the virtual camera and ``enhance`` path
  (a soft camera frame, the seed's blur).
* ``x2``: the decoded half-size frame in, the full-size frame out (scale 2): what the
  receiver of a low-resolution call stream needs.
* ``deblock``: same size in and out (scale 1), trained on ``codec`` alone: what the
  receiver of a full-size but starved call stream needs. Sharpening and deblocking pull
  one small net in opposite directions (a ``restore`` net trained on any mix of the seed
  blur and codec blocking learned to leave blocking untouched), so it is a mode of its own.

A student (or any model here) tells its scale with an int attribute ``scale`` (absent
means 1); its forward maps ``(N, 3, H, W)`` to ``(N, 3, scale*H, scale*W)``. In ``x2``
mode a degradation returns an image of half the target's size, and whatever has no x2
form of its own (the identity row, the unsharp mask, a scale-1 teacher such as Restormer)
is given the degraded input upscaled with bicubic interpolation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

#: ``--mode`` -> the scale its models have.
MODES: dict[str, int] = {"restore": 1, "x2": 2, "deblock": 1}

#: ``--tier`` values, recorded in the model's metadata; ``quality`` is the seed's ensemble.
TIERS = ("quality", "balanced", "fast")


class DegradationLike(Protocol):
    """What the training code needs of a degradation: ``fn(image, rng) -> image`` whose
    size is the target's divided by the mode's scale, a name for cache keys, whether the
    output depends on the image only, and one line for reports."""

    name: str
    deterministic: bool
    description: str

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray: ...


def model_scale(model: object) -> int:
    """The output/input size ratio of a model: its ``scale`` attribute, else that of the
    first of its ``students`` (an ensemble), else 1."""
    scale = getattr(model, "scale", None)
    if scale is not None:
        return int(scale)
    students = getattr(model, "students", None)
    if students is not None and len(students):
        return model_scale(students[0])
    return 1


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """``HxWx3 uint8`` -> ``factor``-times larger with bicubic interpolation (1: itself)."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)


def on_upscaled(method: Callable[[np.ndarray], np.ndarray], factor: int):
    """``method`` applied to the input upscaled by ``factor`` (itself when ``factor`` is 1)."""
    if factor == 1:
        return method
    return lambda image: method(upscale(image, factor))


class Upscaled:
    """A degradation followed by a bicubic upscale back to the target's size: the input a
    scale-1 method gets in ``x2`` mode."""

    def __init__(self, degradation: DegradationLike, factor: int) -> None:
        self.degradation = degradation
        self.factor = factor
        self.name = degradation.name
        self.deterministic = degradation.deterministic
        self.description = degradation.description

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return upscale(self.degradation(image, rng), self.factor)


def upscaled(degradation: DegradationLike, factor: int) -> DegradationLike:
    """:class:`Upscaled` when ``factor`` > 1, else ``degradation`` itself."""
    return degradation if factor == 1 else Upscaled(degradation, factor)
