"""Drive Debian's headless Chromium with Playwright for the WebRTC page tests.

Chromium is the system one (``/usr/bin/chromium``, or ``$SHARPCAM_CHROMIUM``), never a
Playwright download. Its camera is a fake device playing a y4m clip the test writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("SHARPCAM_CHROMIUM", "/usr/bin/chromium"))

#: Flags for a quiet, deterministic headless Chromium with a fake camera.
BASE_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def chromium_or_skip() -> Path:
    """The Chromium executable; skips the test when it is not installed
    (``bash scripts/setup.sh --dev`` installs it)."""
    if not CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is not installed (bash scripts/setup.sh --dev installs it)")
    return CHROMIUM


def flags(fake_video: Path | None) -> list[str]:
    """Chromium's flags; ``fake_video`` is the y4m clip its fake camera plays."""
    extra = [f"--use-file-for-fake-video-capture={fake_video}"] if fake_video else []
    return [*BASE_FLAGS, *extra]


def write_y4m(
    path: Path,
    *,
    width: int = 640,
    height: int = 480,
    fps: int = 15,
    frames: int = 15,
    colour: tuple[int, int, int] = (200, 60, 40),
) -> Path:
    """A y4m clip (4:2:0, ``C420``) of solid ``colour`` with a white square moving along
    the bottom eighth, so frames differ but the upper part stays flat for sampling."""
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode())
        side = height // 10
        for i in range(frames):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[:] = colour
            x = (i * (width - side)) // max(frames - 1, 1)
            rgb[height - side - 2 : height - 2, x : x + side] = 255
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@contextlib.contextmanager
def chromium(fake_video: Path | None = None) -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) with a fake camera; closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(executable), headless=True, args=flags(fake_video)
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_for(page: Any, js: str, arg: Any = None, *, what: str, timeout_s: float = 30.0) -> Any:
    """Poll the page function ``js`` (``(arg) => value``) until it returns something truthy;
    return that. Polls with ``page.evaluate`` rather than ``page.wait_for_function``, which
    needs ``eval`` and so would break under the page's Content-Security-Policy.

    Raises:
        AssertionError: after ``timeout_s`` (a guard against hangs, not a speed claim),
            naming ``what`` and the page's status line.
    """
    end = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(js, arg)
        if value:
            return value
        if time.monotonic() > end:
            status = page.evaluate("() => document.getElementById('status').textContent")
            raise AssertionError(f"gave up waiting for {what}; page status: {status!r}")
        time.sleep(0.1)


def figures(page: Any) -> dict[str, str]:
    """The page's live figures, ``{"fig-fps": "14.9", ...}``."""
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('dd')]"
        ".map((e) => [e.id, e.textContent]))"
    )


#: Counts frames presented by the remote <video> in ``window.remoteFrames``.
COUNT_FRAMES_JS = """() => {
  const video = document.getElementById('remote');
  window.remoteFrames = 0;
  const tick = () => { window.remoteFrames += 1; video.requestVideoFrameCallback(tick); };
  video.requestVideoFrameCallback(tick);
}"""

#: Mean RGB of regions of the remote <video>: [[x0, x1, y0, y1] as fractions, ...].
SAMPLE_JS = """(regions) => {
  const video = document.getElementById('remote');
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return null;
  const canvas = document.createElement('canvas');
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(video, 0, 0, w, h);
  return regions.map(([x0, x1, y0, y1]) => {
    const x = Math.round(x0 * w), y = Math.round(y0 * h);
    const rw = Math.max(1, Math.round((x1 - x0) * w)), rh = Math.max(1, Math.round((y1 - y0) * h));
    const data = ctx.getImageData(x, y, rw, rh).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < data.length; i += 4) {
      sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2];
    }
    const n = data.length / 4;
    return sum.map((s) => s / n);
  });
}"""
