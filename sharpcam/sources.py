"""Where frames come from: a webcam (OpenCV) or a video file (PyAV).

Every source yields :class:`Frame` objects holding ``HxWx3 uint8 RGB`` images, and says
whether it is *live* (a camera: the pipeline drops stale frames to keep latency bounded)
or not (a file: every frame is processed, timestamps kept). :data:`SOURCES` maps the kinds
to classes; :func:`open_source` picks one from the command-line options.

>>> with open_source(input="call.mp4") as src:   # doctest: +SKIP
...     while (frame := src.read()) is not None:
...         ...
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from sharpcam.errors import SourceError, UsageError, one_line
from sharpcam.frames import rgb_from_bgr, rgb_from_video_frame

log = logging.getLogger(__name__)

#: Camera indices :func:`list_cameras` probes.
PROBE_INDICES = range(10)


@dataclass(frozen=True, slots=True)
class Frame:
    """One picture and where it sits in its stream.

    Attributes:
        image: ``HxWx3 uint8`` RGB, C-contiguous.
        index: 0-based number of the frame in its source.
        captured: ``time.monotonic()`` when the source delivered it (for latency).
        pts: presentation timestamp in ``time_base`` units (files); ``None`` for cameras.
        time_base: seconds per ``pts`` unit, or ``None``.
    """

    image: np.ndarray
    index: int
    captured: float
    pts: int | None = None
    time_base: Fraction | None = None


@dataclass(frozen=True)
class SourceInfo:
    """What sinks need to know to open: size, rate, timing and streams to copy through.

    Attributes:
        name: a label for logs (``camera 0``, ``call.mp4``).
        width, height: frame size in pixels (the first frame's, for files).
        fps: nominal frame rate.
        live: a camera (drop stale frames) rather than a file (process every frame).
        time_base: the video stream's time base (files).
        frames: the number of frames if the container says, else ``None``.
        colorspace: the video stream's colour tags (FFmpeg's ``AVColorSpace``,
            ``AVColorRange``, ``AVColorPrimaries``, ``AVColorTransferCharacteristic``
            values), copied onto the output stream; ``None`` for cameras.
        audio: the input's audio streams (PyAV streams), copied through untouched.
    """

    name: str
    width: int
    height: int
    fps: Fraction
    live: bool
    time_base: Fraction | None = None
    frames: int | None = None
    colorspace: tuple[int, int, int, int] | None = None
    audio: Sequence[av.audio.stream.AudioStream] = field(default_factory=tuple)


class SourceLost(SourceError):
    """A live source stopped delivering frames mid-stream (camera unplugged, driver error)."""


class Source(ABC):
    """A stream of :class:`Frame` objects. Use as a context manager; :meth:`close` once."""

    info: SourceInfo
    #: Why a file ended before its last frame (a demux or decode error), else ``None``.
    ended_early: str | None = None

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of a file (also when the rest of the file
        cannot be read: :attr:`ended_early` then says why).

        Raises:
            SourceLost: a camera stopped delivering frames.
            SourceError: a file's first frame cannot be decoded.
        """

    def take_packets(self) -> list[av.Packet]:
        """Non-video packets (audio) demuxed since the last call, in file order, to be
        copied through untouched. Cameras have none."""
        return []

    @abstractmethod
    def close(self) -> None:
        """Release the device or file (idempotent)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- webcams ---------------------------------------------------------------------------------


def camera_backends() -> list[tuple[str, int]]:
    """OpenCV capture backends to try on this platform, best first, as ``(name, api id)``."""
    if sys.platform.startswith("linux"):
        return [("V4L2", cv2.CAP_V4L2), ("any", cv2.CAP_ANY)]
    if sys.platform == "win32":
        return [("MSMF", cv2.CAP_MSMF), ("DirectShow", cv2.CAP_DSHOW)]
    if sys.platform == "darwin":
        return [("AVFoundation", cv2.CAP_AVFOUNDATION)]
    return [("any", cv2.CAP_ANY)]


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (one per backend that fails) while probing."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:
        yield
        return
    before = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_api.setLogLevel(before)


def _open_capture(device: int | str) -> tuple[cv2.VideoCapture | None, list[str]]:
    """Try each backend; the opened capture (or ``None``) and one line per failure."""
    tried: list[str] = []
    with _quiet_opencv():
        for name, api in camera_backends():
            try:
                cap = cv2.VideoCapture(device, api)
            except cv2.error as exc:
                tried.append(f"{name}: {one_line(str(exc), 120)}")
                continue
            if cap.isOpened():
                return cap, tried
            cap.release()
            tried.append(f"{name}: did not open")
    return None, tried


def list_cameras(indices: Sequence[int] = PROBE_INDICES) -> list[int]:
    """The camera indices among ``indices`` that open (each is opened and released)."""
    found = []
    for index in indices:
        cap, _ = _open_capture(index)
        if cap is not None:
            cap.release()
            found.append(index)
    return found


class CameraSource(Source):
    """A webcam through OpenCV's ``VideoCapture`` (the platform's backend).

    Args:
        device: camera index (``0``) or a device path or URL (``/dev/video2``).
        width, height, fps: capture mode to request (the camera may pick the nearest).
        max_failures: consecutive failed reads after which the camera counts as lost.

    Raises:
        SourceError: the camera does not open; the message lists the indices that do.
    """

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        max_failures: int = 5,
    ) -> None:
        self._device = device
        self._max_failures = max_failures
        label = f"camera {device}"
        cap, tried = _open_capture(device)
        if cap is None:
            others = [i for i in list_cameras() if i != device]
            found = (
                f"cameras that open: {', '.join(map(str, others))} (try --device {others[0]})"
                if others
                else f"no camera opens here (probed indices {PROBE_INDICES.start}-"
                f"{PROBE_INDICES.stop - 1}); use --input FILE to process a video instead"
            )
            raise SourceError(f"{label} did not open ({'; '.join(tried)}); {found}")
        self._cap: cv2.VideoCapture | None = cap
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value:
                cap.set(prop, float(value))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer frames queued in the driver: less lag
        self._index = 0
        self._pending: np.ndarray | None = None
        first = self._grab()
        if first is None:
            self.close()
            raise SourceError(
                f"{label} opened but delivered no frame; is another program using it?"
            )
        self._pending = first
        got_fps = cap.get(cv2.CAP_PROP_FPS) or fps or 30.0
        self.info = SourceInfo(
            name=label,
            width=first.shape[1],
            height=first.shape[0],
            fps=Fraction(got_fps).limit_denominator(1001),
            live=True,
        )
        if (width and width != self.info.width) or (height and height != self.info.height):
            log.warning(
                "%s gives %dx%d, not the %sx%s asked for",
                label,
                self.info.width,
                self.info.height,
                width or "*",
                height or "*",
            )

    def _grab(self) -> np.ndarray | None:
        """One RGB image, or ``None`` after ``max_failures`` failed reads in a row."""
        assert self._cap is not None
        for _ in range(self._max_failures):
            try:
                ok, bgr = self._cap.read()
            except cv2.error as exc:
                log.debug("camera read failed: %s", exc)
                ok, bgr = False, None
            if ok and bgr is not None and bgr.ndim == 3 and bgr.shape[2] == 3:
                return rgb_from_bgr(bgr)
            time.sleep(0.01)
        return None

    def read(self) -> Frame:
        if self._cap is None:
            raise SourceLost(f"camera {self._device} is closed")
        image, self._pending = self._pending, None
        if image is None:
            image = self._grab()
        if image is None:
            raise SourceLost(
                f"camera {self._device} stopped delivering frames after {self._index} frames "
                "(unplugged, or taken by another program?)"
            )
        frame = Frame(image, self._index, time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# -- video files -------------------------------------------------------------------------------


class FileSource(Source):
    """A video file read with PyAV: any container and codec FFmpeg decodes (y4m included).

    The first video stream is decoded (frame threads on); audio packets are kept for
    :meth:`take_packets` so the output can copy them through untouched.

    Raises:
        SourceError: the file is missing, unreadable, or has no decodable video stream.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"input video {self.path} does not exist; check the --input path")
        if not self.path.is_file():
            raise SourceError(f"input {self.path} is not a file; pass a video file to --input")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"cannot read input video {self.path}: {_av_message(exc)}; "
                "is it a video file that FFmpeg can decode?"
            ) from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(
                f"input {self.path} has no video stream; pass a video file to --input"
            )
        video = self._video = self._container.streams.video[0]
        video.thread_type = "AUTO"
        self._audio = list(self._container.streams.audio)
        self._demux = self._container.demux(video, *self._audio)
        self._frames: collections.deque[Frame] = collections.deque()
        self._packets: list[av.Packet] = []
        self._index = 0
        self._ended = False
        first = self._next_frame()
        if first is None:
            self.close()
            raise SourceError(f"input {self.path} has no decodable video frame")
        self._frames.appendleft(first)
        cc = video.codec_context
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        self.info = SourceInfo(
            name=self.path.name,
            width=first.image.shape[1],
            height=first.image.shape[0],
            fps=Fraction(rate),
            live=False,
            time_base=video.time_base,
            frames=video.frames or None,
            colorspace=(cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc),
            audio=tuple(self._audio),
        )

    def _next_frame(self) -> Frame | None:
        while not self._frames:
            if self._ended:
                return None
            try:
                packet = next(self._demux)
            except StopIteration:
                self._ended = True
                return None
            except av.FFmpegError as exc:
                return self._stop_early(f"cannot read past frame {self._index}", exc)
            if packet.stream.index != self._video.index:
                if packet.size:  # skip the empty flush packets demux ends with
                    self._packets.append(packet)
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:
                return self._stop_early(f"cannot decode frame {self._index + 1}", exc)
            for vf in decoded:
                image = rgb_from_video_frame(vf)
                tb = vf.time_base or self._video.time_base
                self._frames.append(Frame(image, self._index, time.monotonic(), vf.pts, tb))
                self._index += 1
        return self._frames.popleft()

    def _stop_early(self, what: str, exc: av.FFmpegError) -> Frame | None:
        """End the stream at a demux or decode error (the frames before it stand), or raise
        if not even one frame came out."""
        if self._index == 0:
            raise SourceError(f"{what} of {self.path}: {_av_message(exc)}") from exc
        self._ended = True
        self.ended_early = f"{what}: {_av_message(exc)}"
        log.debug("%s: %s", self.path, self.ended_early)
        return None

    def read(self) -> Frame | None:
        return self._next_frame()

    def take_packets(self) -> list[av.Packet]:
        packets, self._packets = self._packets, []
        return packets

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None


def _av_message(exc: BaseException) -> str:
    """FFmpeg's reason without the path PyAV appends (we print the path ourselves)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return one_line(str(exc.strerror), 160)
    return one_line(str(exc), 160)


#: Source kinds by name.
SOURCES: dict[str, type[Source]] = {"camera": CameraSource, "file": FileSource}


def open_source(
    *,
    device: int | str | None = None,
    input: str | Path | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> Source:
    """Open the camera ``device`` or the video file ``input`` (exactly one).

    Raises:
        UsageError: both or neither given.
        SourceError: it does not open.
    """
    if (device is None) == (input is None):
        raise UsageError("give either --device N (a camera) or --input FILE (a video)")
    if input is not None:
        return FileSource(input)
    assert device is not None
    return CameraSource(device, width=width, height=height, fps=fps)


def parse_device(text: str) -> int | str:
    """``"0"`` → ``0``; anything else (a path, a URL) stays a string."""
    return int(text) if text.strip().isdigit() else text
