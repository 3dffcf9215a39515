"""Degradations: how a sharp frame becomes the soft one sharpcam has to restore.

Each degradation is a small named function ``fn(image, rng) -> image`` on ``HxWx3 uint8``
RGB arrays (KAIR style), registered in :data:`DEGRADATIONS`. Randomised degradations draw
only from the ``rng`` they are given, never from global state, so a run is reproducible.
Working on uint8 mirrors what a call delivers: 8-bit frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

DegradeFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Degradation:
    """A registered degradation.

    Attributes:
        name: registry key, used in cache keys and reports.
        fn: ``fn(image, rng) -> image`` on ``HxWx3 uint8`` arrays, same shape out.
        deterministic: True when the output depends on the image only (then teacher
            outputs on degraded patches can be cached once per patch).
        description: one line for reports and the model card.
    """

    name: str
    fn: DegradeFn
    deterministic: bool
    description: str

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        check_image(image)
        out = self.fn(image, rng if rng is not None else np.random.default_rng(0))
        if out.shape != image.shape or out.dtype != np.uint8:
            raise RuntimeError(
                f"degradation {self.name!r} returned {out.dtype} {out.shape}, "
                f"expected uint8 {image.shape}"
            )
        return out


DEGRADATIONS: dict[str, Degradation] = {}


def register_degradation(
    name: str, *, deterministic: bool, description: str
) -> Callable[[DegradeFn], DegradeFn]:
    """Decorator adding ``fn`` to :data:`DEGRADATIONS` under ``name``."""

    def wrap(fn: DegradeFn) -> DegradeFn:
        if name in DEGRADATIONS:
            raise ValueError(f"degradation {name!r} is already registered")
        DEGRADATIONS[name] = Degradation(name, fn, deterministic, description)
        return fn

    return wrap


def get_degradation(name: str) -> Degradation:
    """Look up a degradation by name; unknown names raise ``KeyError`` listing the known."""
    try:
        return DEGRADATIONS[name]
    except KeyError:
        known = ", ".join(sorted(DEGRADATIONS))
        raise KeyError(f"unknown degradation {name!r}: choose one of {known}") from None


def check_image(image: np.ndarray) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``image`` is ``HxWx3 uint8``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"expected a uint8 numpy image, got {got}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")


@register_degradation(
    "seed",
    deterministic=True,
    description="downsample x2 (OpenCV INTER_LINEAR), upsample back (INTER_CUBIC)",
)
def seed_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The seed write-up's degradation: half size with linear, back with bicubic.

    Args:
        image: ``HxWx3 uint8``.
        rng: unused (the degradation is deterministic).

    Returns:
        ``HxWx3 uint8``, the same size as ``image``.
    """
    del rng
    h, w = image.shape[:2]
    small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
