"""Test media made on the spot, and fakes for hardware that cannot exist here.

* :func:`make_clip` writes a small video (H.264 MP4 or y4m) with real PyAV encoders, with
  an optional AAC sine track, and returns the RGB frames it encoded.
* :class:`FakeCapture` stands in for ``cv2.VideoCapture`` (there is no webcam here): it
  yields BGR frames, then fails mid-stream; only the indices in ``OPENABLE`` open.
* :class:`RecordingCamera` stands in for ``pyvirtualcam.Camera`` (no v4l2loopback here).
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import av
import cv2
import numpy as np

from sharpcam.frames import rgb_from_video_frame


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """An ``HxWx3 uint8`` RGB frame that changes with ``index``: a moving bar, a square,
    a gradient (texture for a sharpener, edges for a codec)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), np.full_like(x, 90)],
        axis=-1,
    ).astype(np.uint8)
    left = (index * 7) % max(width - 8, 1)
    image[:, left : left + 8] = 255
    image[height // 4 : height // 2, width // 4 : width // 2] = (20, 160, 40)
    return image


def make_clip(
    path: Path,
    *,
    frames: int = 12,
    width: int = 96,
    height: int = 64,
    fps: int = 25,
    audio: bool = False,
    sample_rate: int = 48_000,
) -> list[np.ndarray]:
    """Encode ``frames`` test-pattern frames to ``path`` (.mp4: H.264 + optional AAC;
    .y4m: raw YUV 4:2:0). Returns the RGB frames fed to the encoder."""
    images = [pattern_frame(i, width, height) for i in range(frames)]
    with av.open(str(path), "w") as out:
        codec = "rawvideo" if path.suffix == ".y4m" else "libx264"
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            video.codec_context.options = {"crf": "12", "preset": "ultrafast"}
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for i, image in enumerate(images):
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            out.mux(video.encode(vf))
        out.mux(video.encode(None))
        if sound is not None:
            total = sample_rate * frames // fps
            t = np.arange(total) / sample_rate
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(
                    samples[None, start : start + 1024], format="flt", layout="mono"
                )
                af.sample_rate, af.pts = sample_rate, start
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return images


def decode_rgb(path: Path) -> list[np.ndarray]:
    """Every video frame of ``path`` as ``HxWx3 uint8`` RGB."""
    with av.open(str(path)) as container:
        return [rgb_from_video_frame(f) for f in container.decode(video=0)]


def video_times(path: Path) -> list[float]:
    """Presentation times (seconds) of every video frame of ``path``."""
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]


def audio_payloads(path: Path) -> list[bytes]:
    """The raw bytes of every audio packet of ``path`` (to compare copies)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class FakeCapture:
    """A ``cv2.VideoCapture`` double: no webcam exists on the test machine.

    Class attributes configure it (tests set them with ``monkeypatch``):
    ``OPENABLE`` which indices open; ``FAIL_AFTER`` frames delivered before every later
    read fails (``None``: never); ``SIZE`` the ``(width, height)`` it delivers, whatever is
    asked; ``INTERVAL`` seconds each read takes (a camera's frame period).
    ``instances`` records every capture created, with the properties set on it.
    """

    OPENABLE: ClassVar[set[int | str]] = {0}
    FAIL_AFTER: ClassVar[int | None] = None
    SIZE: ClassVar[tuple[int, int]] = (64, 48)
    INTERVAL: ClassVar[float] = 0.0
    instances: ClassVar[list[FakeCapture]] = []

    def __init__(self, device: int | str, api: int = cv2.CAP_ANY) -> None:
        self.device, self.api = device, api
        self.opened = device in self.OPENABLE
        self.props: dict[int, float] = {}
        self.reads = 0
        self.released = False
        FakeCapture.instances.append(self)

    def isOpened(self) -> bool:
        return self.opened and not self.released

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else self.props.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.INTERVAL:
            time.sleep(self.INTERVAL)
        if self.FAIL_AFTER is not None and self.reads >= self.FAIL_AFTER:
            return False, None
        rgb = pattern_frame(self.reads, *self.SIZE)
        self.reads += 1
        return True, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def release(self) -> None:
        self.released = True


class RecordingCamera:
    """A ``pyvirtualcam.Camera`` double that records what it is sent."""

    instances: ClassVar[list[RecordingCamera]] = []

    def __init__(self, width: int, height: int, fps: float, **kwargs: Any) -> None:
        self.width, self.height, self.fps, self.kwargs = width, height, fps, kwargs
        self.frames: list[np.ndarray] = []
        self.closed = False
        self.paced = 0
        self.device = kwargs.get("device") or "/dev/video7"
        RecordingCamera.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.shape == (self.height, self.width, 3), frame.shape
        assert frame.dtype == np.uint8
        self.frames.append(frame.copy())

    def sleep_until_next_frame(self) -> None:
        self.paced += 1

    def close(self) -> None:
        self.closed = True
