"""Small self-made test images with edges and texture (so sharpening has work to do)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An ``HxWx3 uint8`` RGB image: a smooth gradient with shapes, lines and text."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            128 + 90 * np.sin(x / (7 + 5 * rng.random())),
            128 + 90 * np.cos(y / (9 + 5 * rng.random())),
            128 + 60 * np.sin((x + y) / 13),
        ],
        axis=-1,
    ).astype(np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.rectangle(image, p1, p2, colour, -1)
        else:
            cv2.line(image, p1, p2, colour, int(rng.integers(1, 4)))
    cv2.putText(image, "sharpcam", (4, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    return image


def write_photo(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """Write :func:`make_photo` as PNG or JPEG (by suffix)."""
    image = make_photo(height, width, seed)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def write_photos(folder: Path, count: int, height: int = 96, width: int = 128) -> list[Path]:
    """``count`` distinct photos ``photo_NN.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_photo(folder / f"photo_{i:02d}.png", height, width, seed=i) for i in range(count)]
