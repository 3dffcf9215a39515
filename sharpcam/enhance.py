"""``sharpcam enhance IN OUT``: sharpen one image file.

Any image OpenCV decodes (PNG, JPEG, WebP, TIFF, BMP...). Grey images come out as RGB;
an alpha channel is kept as it was; 16-bit images are sharpened at 8 bits (a warning
says so). The output format follows ``OUT``'s suffix and the file is written atomically
(through a symbolic link, to its target). ``OUT`` may not be ``IN`` (nor a link to it).

Large images are sharpened in overlapping tiles (:mod:`sharpcam.tiles`): memory is about
8 bytes per image pixel (the decoded image, the result, the encoded file) plus one tile's
model run (about 300 MB for the shipped model at the default ``--tile 1024``), and images
over :data:`~sharpcam.tiles.MAX_PIXELS` are refused before they are decoded.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from sharpcam.atomic import atomic_write_bytes
from sharpcam.cli import (
    add_log_options,
    add_model_options,
    make_parser,
    open_engine,
    reports_errors,
    setup_logging,
)
from sharpcam.errors import SinkError, SourceError, UsageError
from sharpcam.sinks import check_writable, same_file
from sharpcam.tiles import MAX_PIXELS, OVERLAP, TILE, image_size, process_tiled

log = logging.getLogger(__name__)


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(HxWx3 uint8 BGR, alpha HxW uint8 or None)`` from an image file.

    Raises:
        SourceError: missing, unreadable, or not an image OpenCV decodes.
    """
    if path.is_dir():
        raise SourceError(
            f"input {path} is a folder; enhance takes one image file: "
            "sharpcam enhance IN.png OUT.png"
        )
    if not path.is_file():
        raise SourceError(f"input image {path} does not exist; check the path")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
    _check_pixels(path, image_size(data[: 1 << 18].tobytes()))
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise SourceError(
            f"cannot decode {path}: not an image OpenCV reads (PNG, JPEG, WebP, TIFF, BMP...)"
        )
    _check_pixels(path, (image.shape[1], image.shape[0]))
    if image.dtype != np.uint8:
        log.warning("%s is %s: sharpened at 8 bits per channel", path.name, image.dtype)
        top = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
        image = cv2.convertScaleAbs(image, alpha=255.0 / top)
    alpha = None
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        alpha = np.ascontiguousarray(image[:, :, 3])
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image, alpha


def _check_pixels(path: Path, size: tuple[int, int] | None) -> None:
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise SourceError(
            f"{path} is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} megapixels); "
            f"enhance takes at most {MAX_PIXELS / 1e6:.0f} megapixels — scale it down first"
        )


def write_image(path: Path, bgr: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """Encode by ``path``'s suffix and write atomically.

    Raises:
        SinkError: unknown format or unwritable path.
    """
    image = np.dstack([bgr, alpha]) if alpha is not None else bgr
    try:
        ok, encoded = cv2.imencode(path.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise SinkError(
            f"cannot write {path}: unknown image format {path.suffix!r}; use .png or .jpg"
        )
    try:
        atomic_write_bytes(path, encoded.tobytes())
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror}; choose a writable path") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "sharpcam enhance",
        "Sharpen one image (or upscale it ×2 with --upscale 2); the output format follows OUT's "
        "suffix.",
    )
    parser.add_argument("input", type=Path, metavar="IN", help="image to sharpen")
    parser.add_argument("output", type=Path, metavar="OUT", help="where to write the result")
    parser.add_argument(
        "--tile", type=int, default=TILE, metavar="PX",
        help=f"sharpen in tiles of at most PX x PX pixels ({OVERLAP} px overlap, seamless): "
        "memory is about 8 bytes per image pixel plus one tile's model run (~300 MB at "
        f"1024); 0 = the whole image at once; images over {MAX_PIXELS // 1_000_000} "
        "megapixels are refused",
    )  # fmt: skip
    add_model_options(parser, upscale=True)
    add_log_options(parser)
    return parser


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Sharpen ``IN`` into ``OUT``; 0 on success, 1 with one error line otherwise."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.tile and args.tile < 4 * OVERLAP:
        raise UsageError(f"--tile must be 0 (no tiles) or at least {4 * OVERLAP}, got {args.tile}")
    if same_file(args.input, args.output):
        raise UsageError(f"OUT {args.output} is the input file; choose another output name")
    check_writable(args.output)
    if not cv2.haveImageWriter(str(args.output)):
        raise SinkError(
            f"cannot write {args.output}: unknown image format {args.output.suffix!r}; "
            "use .png, .jpg, .webp, .tif or .bmp"
        )
    bgr, alpha = read_image(args.input)
    engine = open_engine(args)  # one image, no deadline: the best tier, nothing timed
    tile = args.tile // 8 * 8 or max(bgr.shape[:2])
    model_ms = []

    def sharpen(part: np.ndarray) -> np.ndarray:
        result = engine.process(part, bgr=True)
        model_ms.append(engine.last_ms)
        return result

    sharp = process_tiled(sharpen, bgr, tile, scale=engine.scale)
    write_image(args.output, sharp, alpha)
    log.info(
        "wrote %s (%dx%d; model %.0f ms on %s, %d tile%s)",
        args.output,
        sharp.shape[1],
        sharp.shape[0],
        sum(model_ms),
        engine.describe(),
        len(model_ms),
        "" if len(model_ms) == 1 else "s",
    )
    return 0
