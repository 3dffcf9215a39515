"""The preview window sink: an OpenCV window showing the original and the sharpened frame
side by side (split view), toggled with the keyboard."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from sharpcam.errors import SinkError
from sharpcam.frames import bgr_from_rgb
from sharpcam.sink_base import Sink, checked_image, fit_to
from sharpcam.sources import Frame

PREVIEW_MODES = ("split", "sharpened", "original")


def compose_preview(
    original: np.ndarray, sharpened: np.ndarray, mode: str = "split", split: float = 0.5
) -> np.ndarray:
    """The picture the preview shows, ``HxWx3 uint8`` RGB (a new array).

    ``split``: left of ``split * W`` the original, right of it the sharpened frame, a
    1-pixel white divider and labels; ``sharpened`` / ``original``: that frame alone.

    Raises:
        ValueError: unknown ``mode``, or the two frames differ in size.
    """
    if mode not in PREVIEW_MODES:
        raise ValueError(f"mode must be one of {PREVIEW_MODES}, got {mode!r}")
    if original.shape != sharpened.shape:
        raise ValueError(f"original {original.shape} and sharpened {sharpened.shape} differ")
    if mode != "split":
        return (sharpened if mode == "sharpened" else original).copy()
    out = sharpened.copy()
    x = round(out.shape[1] * split)
    out[:, :x] = original[:, :x]
    if 0 < x < out.shape[1]:
        out[:, x] = 255
    scale = max(out.shape[0] / 720, 0.4)
    for text, left in (("original", True), ("sharpened", False)):
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        pos = (
            (max(x - tw - 10, 2), th + 8) if left else (min(x + 10, out.shape[1] - tw - 2), th + 8)
        )
        cv2.putText(
            out, text, pos, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


def has_display(platform: str = sys.platform, environ: dict[str, str] | None = None) -> bool:
    """Whether a window can open (on Linux: ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set;
    OpenCV's Qt aborts the whole process otherwise, so this is checked first)."""
    env = os.environ if environ is None else environ
    if platform.startswith("linux"):
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


class PreviewSink(Sink):
    """An OpenCV window: split view (left original, right sharpened).

    Keys: ``space`` or ``s`` cycles split / sharpened / original; ``q`` or ``Esc`` ends
    the run (so does closing the window).

    Raises:
        SinkError: no display to open a window on.
    """

    name = "preview"

    def __init__(self, title: str = "sharpcam (space: toggle view, q: quit)") -> None:
        if not has_display():
            raise SinkError(
                "no display for --preview (DISPLAY is not set); run it in a desktop session, "
                "or use --output FILE"
            )
        self.title = title
        self.mode = PREVIEW_MODES[0]
        self._stop = False
        self._open = True
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        sharp = checked_image(frame)
        orig = original.image if original is not None else sharp
        if orig.shape != sharp.shape:
            orig = fit_to(orig, sharp.shape[1], sharp.shape[0])
        cv2.imshow(self.title, bgr_from_rgb(compose_preview(orig, sharp, self.mode)))
        self.handle_key(cv2.waitKey(1))
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self._stop = True

    def handle_key(self, key: int) -> None:
        """Act on a key code from ``cv2.waitKey`` (``-1``: none)."""
        key &= 0xFF
        if key in (ord(" "), ord("s")):
            self.mode = PREVIEW_MODES[(PREVIEW_MODES.index(self.mode) + 1) % len(PREVIEW_MODES)]
        elif key in (ord("q"), 27):
            self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def close(self, *, complete: bool = True) -> None:
        if self._open:
            self._open = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
