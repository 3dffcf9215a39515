"""Sharpen images larger than a frame in overlapping tiles, so memory stays bounded.

A model's memory grows with the pixels of one run (the shipped one needs about 160 bytes
per pixel), so ``sharpcam enhance`` of a 100-megapixel photo in one piece would need
16 GB. :func:`process_tiled` runs tiles of at most ``tile x tile`` pixels instead. Each
tile is read with ``overlap`` pixels of real context on every inner side and only its core
is kept, so a model whose receptive field fits in the overlap (the shipped one sees 14
pixels each way) gives the same result as an untiled run. Tile origins are multiples of
the contract's 8, so the tiles at the right and bottom edges are padded exactly as the
whole image would be, and strided layers see the same pixel grid.

:func:`image_size` reads the size of a PNG or JPEG from its header, so absurd images are
refused before they are decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from sharpcam.contract import MULTIPLE

#: Default tile side in pixels (``enhance --tile``): ~300 MB of model memory (shipped model).
TILE = 1024
#: Context each tile gets beyond its kept core, on inner sides.
OVERLAP = 32
#: Largest image ``enhance`` takes (pixels): beyond it the image alone needs gigabytes.
MAX_PIXELS = 200_000_000


def spans(size: int, tile: int, overlap: int = OVERLAP) -> list[tuple[int, int, int, int]]:
    """Windows along one axis of ``size`` pixels: ``(start, end, keep_start, keep_end)``.

    The kept parts tile ``[0, size)`` exactly; each window is at most ``tile`` long and
    starts at a multiple of :data:`MULTIPLE`.

    >>> spans(100, 1024)
    [(0, 100, 0, 100)]
    >>> spans(200, 128, 32)
    [(0, 96, 0, 64), (32, 160, 64, 128), (96, 200, 128, 192), (160, 200, 192, 200)]
    """
    if size <= tile:
        return [(0, size, 0, size)]
    core = tile - 2 * overlap
    if core < MULTIPLE or core % MULTIPLE or overlap % MULTIPLE:
        raise ValueError(f"tile {tile} with overlap {overlap} leaves no 8-aligned core")
    out = []
    for keep in range(0, size, core):
        keep_end = min(size, keep + core)
        out.append((max(0, keep - overlap), min(size, keep_end + overlap), keep, keep_end))
    return out


def process_tiled(
    process: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int = TILE,
    overlap: int = OVERLAP,
    *,
    scale: int = 1,
) -> np.ndarray:
    """``process`` (``HxWxC uint8`` → ``(sH)x(sW)xC``, ``s`` = ``scale``) applied to
    ``image`` tile by tile.

    Memory beyond ``image`` and the result: one tile's run of the model.
    """
    height, width = image.shape[:2]
    if height <= tile and width <= tile:
        return process(image)
    s = scale
    out = np.empty((height * s, width * s, *image.shape[2:]), image.dtype)
    for y0, y1, ky0, ky1 in spans(height, tile, overlap):
        for x0, x1, kx0, kx1 in spans(width, tile, overlap):
            part = process(np.ascontiguousarray(image[y0:y1, x0:x1]))
            out[ky0 * s : ky1 * s, kx0 * s : kx1 * s] = part[
                (ky0 - y0) * s : (ky1 - y0) * s, (kx0 - x0) * s : (kx1 - x0) * s
            ]
    return out


def image_size(head: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the first bytes of a PNG or JPEG file, else ``None``.

    >>> image_size(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0\\0\\0\\rIHDR" + struct.pack(">II", 640, 480))
    (640, 480)
    """
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        (length,) = struct.unpack(">H", head[at + 2 : at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None
