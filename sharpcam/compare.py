"""Side-by-side comparisons a person can look at: original on the left, sharpened on the right.

:class:`CompareImageSink` keeps one pair of frames (the middle frame of a file, the latest
of a camera) and writes it as one picture when the run ends: the two whole frames side by
side on top, and below them the same crop of both, zoomed, taken where the model changed
the picture most (its place is outlined on the top row). :class:`CompareVideoSink` writes
every pair side by side into a video twice as wide. Both are written to a temporary name
and moved into place only when the run finished, like every other output.

>>> original = np.zeros((64, 96, 3), np.uint8)
>>> comparison_image(original, original).shape
(128, 192, 3)
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from sharpcam.atomic import atomic_write_bytes
from sharpcam.errors import SinkError, UsageError
from sharpcam.frames import bgr_from_rgb, check_frame
from sharpcam.sinks import FileSink, Sink, check_writable, pick_codec
from sharpcam.sources import Frame, SourceInfo

log = logging.getLogger(__name__)

#: Suffixes :func:`open_compare` writes as a still picture; any other is a video.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: How much the crop on the bottom row of :func:`comparison_image` is enlarged.
ZOOM = 4

OUTLINE = (255, 215, 0)  # RGB: the crop's place on the top row


def _label(image: np.ndarray, text: str) -> None:
    """Write ``text`` in the top-left corner of ``image`` (in place), legible on any picture."""
    height = image.shape[0]
    scale = max(0.35, height / 900)
    thick = max(1, round(scale * 2))
    org = (max(4, round(8 * scale)), max(12, round(30 * scale)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, text, org, font, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(image, text, org, font, scale, (255, 255, 255), thick, cv2.LINE_AA)


def side_by_side(original: np.ndarray, sharpened: np.ndarray) -> np.ndarray:
    """``original | sharpened``, each labelled; one ``H x 2W x 3`` uint8 image."""
    left, right = original.copy(), _fit(sharpened, original)
    _label(left, "original")
    _label(right, "sharpened")
    return np.ascontiguousarray(np.hstack([left, right]))


def busiest_crop(
    original: np.ndarray, sharpened: np.ndarray, size: tuple[int, int]
) -> tuple[int, int]:
    """``(top, left)`` of the ``size = (h, w)`` window where the two images differ most."""
    ch, cw = size
    diff = np.abs(sharpened.astype(np.int16) - original.astype(np.int16)).mean(axis=2)
    mean = cv2.blur(diff.astype(np.float32), (cw, ch), borderType=cv2.BORDER_CONSTANT)
    height, width = diff.shape
    # blur centres the window on each pixel; keep only centres whose window fits.
    y0, x0 = ch // 2, cw // 2
    valid = mean[y0 : height - (ch - y0) + 1, x0 : width - (cw - x0) + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y), int(x)


def comparison_image(original: np.ndarray, sharpened: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """The picture :class:`CompareImageSink` writes (``2H x 2W x 3`` uint8 RGB): top, the
    two frames side by side; bottom, the same ``1/zoom`` crop of both enlarged ``zoom``
    times without smoothing, where sharpening changed the most (outlined on top)."""
    check_frame(original)
    sharpened = _fit(check_frame(sharpened), original)
    height, width = original.shape[:2]
    ch, cw = max(1, height // zoom), max(1, width // zoom)
    top, left = busiest_crop(original, sharpened, (ch, cw))
    zoomed = []
    for image, name in ((original, "original"), (sharpened, "sharpened")):
        crop = image[top : top + ch, left : left + cw]
        big = cv2.resize(crop, (width, height), interpolation=cv2.INTER_NEAREST)
        _label(big, f"{name}, crop x{zoom}")
        zoomed.append(big)
    upper = side_by_side(original, sharpened)
    thick = max(1, width // 640)
    for offset in (0, width):
        corner = (offset + left, top)
        far = (offset + left + cw - 1, top + ch - 1)
        cv2.rectangle(upper, corner, far, OUTLINE, thick)
    return np.vstack([upper, np.hstack(zoomed)])


def _fit(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    if image.shape == like.shape:
        return image
    return cv2.resize(image, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_AREA)


class CompareImageSink(Sink):
    """Writes :func:`comparison_image` of one frame to ``path`` (PNG or JPEG) when the run
    has finished: frame ``target`` (the middle one of a file), or the latest frame sent
    when ``target`` is ``None`` or never reached.

    Raises:
        SinkError: the path cannot be written (checked when opened).
    """

    name = "compare image"

    def __init__(self, path: str | Path, *, target: int | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_SUFFIXES:
            raise SinkError(
                f"a comparison picture must be {', '.join(IMAGE_SUFFIXES)}, got {self.path.name}"
            )
        check_writable(self.path)
        self.target = target
        self._pair: tuple[int, np.ndarray, np.ndarray] | None = None
        self._closed = False

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        image = check_frame(frame.image)
        before = check_frame(original.image) if original is not None else image
        if self._pair is None or self.target is None or frame.index <= self.target:
            self._pair = (frame.index, before.copy(), image.copy())

    def close(self, *, complete: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if not complete:
            log.warning("%s not written (run did not finish)", self.path)
            return
        if self._pair is None:
            log.warning("%s not written (no frame arrived)", self.path)
            return
        index, before, after = self._pair
        ok, data = cv2.imencode(
            self.path.suffix.lower(), bgr_from_rgb(comparison_image(before, after))
        )
        if not ok:
            raise SinkError(f"cannot encode {self.path}; name it .png")
        try:
            atomic_write_bytes(self.path, data.tobytes())
        except OSError as exc:
            raise SinkError(
                f"cannot write {self.path}: {exc.strerror}; choose a writable path"
            ) from exc
        log.info(
            "wrote %s (frame %d: original | sharpened, below a crop x%d)", self.path, index, ZOOM
        )


class CompareVideoSink(Sink):
    """Every frame as ``original | sharpened`` (labelled) in a video twice as wide as the
    source, encoded like ``--output`` (a :class:`~sharpcam.sinks.FileSink`, no audio)."""

    name = "compare video"

    def __init__(self, path: str | Path, info: SourceInfo) -> None:
        self._file = FileSink(
            path,
            width=2 * info.width,
            height=info.height,
            fps=info.fps,
            time_base=info.time_base,
            colorspace=info.colorspace,
        )
        self.path = self._file.path

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        before = original.image if original is not None else frame.image
        image = side_by_side(check_frame(before), check_frame(frame.image))
        self._file.send(
            Frame(image, frame.index, frame.captured, pts=frame.pts, time_base=frame.time_base)
        )

    def close(self, *, complete: bool = True) -> None:
        self._file.close(complete=complete)


def compare_path(value: str, output: Path | None) -> Path:
    """Where ``--compare [FILE]`` writes: ``FILE``, or beside ``--output`` with
    ``.compare.png`` in place of its suffix when no FILE is given.

    Raises:
        UsageError: no FILE and no ``--output`` to name it after.
        SinkError: an unknown suffix, or a path that cannot be written.
    """
    if value:
        path = Path(value)
    elif output is not None:
        path = output.with_name(f"{output.stem}.compare.png")
    else:
        raise UsageError("--compare needs a FILE when there is no --output to name it after")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        pick_codec(path.suffix)  # raises for an unknown video suffix
    check_writable(path)
    return path


def open_compare(path: Path, info: SourceInfo, *, frames: int | None) -> Sink:
    """The comparison sink for ``path``: a picture of the middle one of ``frames`` (of the
    latest frame when the count is unknown), or a side-by-side video."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        target = frames // 2 if frames else None
        return CompareImageSink(path, target=target)
    return CompareVideoSink(path, info)
