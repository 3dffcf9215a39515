"""Where sharpened frames go: a virtual camera, a video file, a preview window, or nowhere.

The pattern is pyvirtualcam's: an abstract :class:`Sink` documents the contract, a small
registry (:data:`SINKS`, :func:`register_sink`) names the kinds, and every sink checks its
frames first (``TypeError`` for a wrong dtype, ``ValueError`` for a wrong shape). Sinks are
context managers; leaving the block because of an exception closes them as *incomplete*,
which for a file means the partial output is deleted and any previous file is kept.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pyvirtualcam

from sharpcam.atomic import atomic_path, destination
from sharpcam.errors import SinkError, one_line
from sharpcam.frames import colour_options, video_frame_from_rgb
from sharpcam.preview import PREVIEW_MODES, PreviewSink, compose_preview, has_display
from sharpcam.sink_base import Sink, checked_image, fit_to
from sharpcam.sources import Frame, SourceInfo

__all__ = [
    "PREVIEW_MODES",
    "SINKS",
    "FileSink",
    "FileSinkSettings",
    "NullSink",
    "PreviewSink",
    "Sink",
    "VirtualCameraSink",
    "check_writable",
    "compose_preview",
    "has_display",
    "pick_codec",
    "register_sink",
    "same_file",
    "virtual_camera_hint",
]

log = logging.getLogger(__name__)


# -- null ------------------------------------------------------------------------------------


class NullSink(Sink):
    """Drops every frame (after checking it); counts them. For benchmarks."""

    name = "null"

    def __init__(self) -> None:
        self.frames = 0

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        checked_image(frame)
        self.frames += 1

    def close(self, *, complete: bool = True) -> None:
        pass


# -- virtual camera --------------------------------------------------------------------------


def virtual_camera_hint(platform: str = sys.platform) -> str:
    """What to do on ``platform`` when no virtual-camera backend is available."""
    if platform.startswith("linux"):
        return (
            "on Linux load v4l2loopback (package v4l2loopback-dkms): `sudo modprobe "
            "v4l2loopback devices=1 exclusive_caps=1 card_label=sharpcam` "
            "(exclusive_caps=1 is what Chrome needs)"
        )
    if platform == "darwin":
        return (
            "on macOS install OBS Studio and start its virtual camera once (Start Virtual Camera)"
        )
    return "on Windows install OBS Studio and start its virtual camera once (Start Virtual Camera)"


def _v4l2_label(device: str) -> str | None:
    """The card label of a v4l2loopback device (``/dev/video2`` → ``sharpcam``), if known."""
    try:
        return Path(f"/sys/class/video4linux/{Path(device).name}/name").read_text().strip()
    except OSError:
        return None


@contextmanager
def _quiet_pyvirtualcam_del() -> Iterator[None]:
    """pyvirtualcam's ``Camera.__del__`` raises ``AttributeError`` after a failed
    ``__init__`` (it reports it as an 'Exception ignored' traceback); keep that off the
    user's terminal while a camera is being opened."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        obj = getattr(unraisable, "object", None)
        if isinstance(unraisable.exc_value, AttributeError) and "Camera.__del__" in repr(obj):
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


class VirtualCameraSink(Sink):
    """A virtual webcam (pyvirtualcam) that Zoom, Meet or a browser can pick.

    Args:
        width, height, fps: the camera's mode; frames of another size are resized to it.
        backend: pyvirtualcam backend (``v4l2loopback``, ``obs``, ``unitycapture``);
            ``None`` tries each available one.
        device: the device to use (``/dev/video2``); ``None`` = the first free one.
        pace: wait after each frame so frames leave at ``fps`` (for a file played into
            the camera; a live camera paces itself).

    Raises:
        SinkError: no backend works here; the message says how to get one on this
            platform, and offers ``--preview`` or ``--output FILE`` instead.
    """

    name = "virtual camera"

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        *,
        backend: str | None = None,
        device: str | None = None,
        pace: bool = False,
    ) -> None:
        self.width, self.height = width, height
        self._pace = pace
        known = sorted(pyvirtualcam.camera.BACKENDS)
        if backend is not None and backend not in known:
            raise SinkError(
                f"unknown virtual-camera backend {backend!r}; on this platform: "
                f"{', '.join(known) or 'none'}"
            )
        reason = ""
        with _quiet_pyvirtualcam_del():
            try:
                self._cam: pyvirtualcam.Camera | None = pyvirtualcam.Camera(
                    width=width,
                    height=height,
                    fps=float(fps),
                    fmt=pyvirtualcam.PixelFormat.RGB,
                    backend=backend,
                    device=device,
                )
            except (RuntimeError, ValueError) as exc:
                reason = one_line(str(exc), 200)
                self._cam = None
        if self._cam is None:
            raise SinkError(
                f"no virtual camera ({reason}); {virtual_camera_hint()}; "
                "or use --preview or --output FILE instead"
            )
        dev = self._cam.device
        label = _v4l2_label(dev) if dev.startswith("/dev/") else None
        self.device = dev
        self.label = label or dev
        self.frames = 0
        log.info(
            "virtual camera ready: choose %r%s in Zoom, Meet or the browser (%dx%d @ %.3g fps)",
            self.label,
            f" ({dev})" if label else "",
            width,
            height,
            float(fps),
        )

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        image = checked_image(frame)
        if self._cam is None:
            raise SinkError("the virtual camera is closed")
        self._cam.send(fit_to(image, self.width, self.height))
        self.frames += 1
        if self._pace:
            self._cam.sleep_until_next_frame()

    def close(self, *, complete: bool = True) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


# -- video file ------------------------------------------------------------------------------

#: Video encoders to try per output suffix, best first.
VIDEO_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "libopenh264", "mpeg4"),
    ".m4v": ("libx264", "libopenh264", "mpeg4"),
    ".mov": ("libx264", "libopenh264", "mpeg4"),
    ".mkv": ("libx264", "libopenh264", "mpeg4"),
    ".avi": ("libx264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".y4m": ("rawvideo",),
}
#: Containers whose time base is one frame (timestamps are frame numbers).
FRAME_TIMED = {".avi"}
#: Containers that cannot hold audio: it is dropped there, with a warning.
NO_AUDIO = {".y4m"}


@dataclass(frozen=True)
class FileSinkSettings:
    """Encoder settings for :class:`FileSink`.

    Attributes:
        crf: constant rate factor for x264/VP9 (lower is better; 18 is visually lossless).
        preset: x264 speed preset.
        codec: encoder name; ``None`` picks from :data:`VIDEO_CODECS` by suffix.
    """

    crf: int = 18
    preset: str = "veryfast"
    codec: str | None = None


def pick_codec(suffix: str, codec: str | None = None) -> str:
    """The encoder for an output with this suffix (H.264 when available).

    Raises:
        SinkError: unknown suffix, or no listed encoder in this FFmpeg build.
    """
    suffix = suffix.lower()
    if suffix not in VIDEO_CODECS:
        raise SinkError(
            f"unknown output video format {suffix or '(no suffix)'!r}; "
            f"name the file with one of {', '.join(VIDEO_CODECS)}"
        )
    wanted = (codec,) if codec else VIDEO_CODECS[suffix]
    for name in wanted:
        if name in av.codecs_available:
            return name
    raise SinkError(f"no encoder for {suffix} in this FFmpeg build (tried {', '.join(wanted)})")


class FileSink(Sink):
    """A video file written with PyAV; audio packets are copied through untouched.

    The file is written under a temporary name next to ``path`` and moved into place by
    :meth:`close` only when complete; ``close(complete=False)`` (or an exception in the
    ``with`` block) deletes it and leaves any existing ``path`` as it was.

    Args:
        path: output file; the suffix picks the container and encoder (:data:`VIDEO_CODECS`).
        width, height: frame size (frames of another size are resized to it).
        fps: nominal frame rate (used when frames carry no timestamps).
        time_base: the input's time base; frame timestamps are kept in it.
        audio: input audio streams to copy (their packets arrive via :meth:`passthrough`).
        colorspace: input colour tags ``(space, range, primaries, trc)`` to keep.
        settings: encoder settings.

    Raises:
        SinkError: unknown format, or the path cannot be written.
    """

    name = "file"

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction | None = None,
        audio: Sequence[av.audio.stream.AudioStream] = (),
        colorspace: tuple[int, int, int, int] | None = None,
        settings: FileSinkSettings = FileSinkSettings(),
    ) -> None:
        self.path = Path(path)
        codec = pick_codec(self.path.suffix, settings.codec)
        check_writable(self.path)
        self.width, self.height = width, height
        self._fps = Fraction(fps)
        # AVI counts time in frames: a finer time base makes its header claim that many fps.
        constant_rate = self.path.suffix.lower() in FRAME_TIMED
        self._tb = 1 / self._fps if constant_rate else (time_base or 1 / self._fps)
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            self._container = av.open(str(tmp), "w")
        except (av.FFmpegError, OSError) as exc:
            self._stack.close()
            raise SinkError(f"cannot write {self.path}: {exc}; choose a writable path") from exc
        self._audio: dict[int, av.stream.Stream] = {}
        try:
            self._video = self._add_video(codec, settings, colorspace)
            if audio and self.path.suffix.lower() in NO_AUDIO:
                log.warning("%s cannot hold audio: the audio is dropped", self.path.suffix)
            elif audio:
                for stream in audio:
                    self._audio[stream.index] = self._add_audio(stream)
        except BaseException:
            self._container.close()
            self._stack.__exit__(*sys.exc_info())
            raise
        self.frames = 0
        self._last_pts: int | None = None
        self._closed = False

    @classmethod
    def for_source(
        cls, path: str | Path, info: SourceInfo, settings: FileSinkSettings = FileSinkSettings()
    ) -> FileSink:
        """A file sink that keeps what ``info`` describes: size, rate, time base, colour tags
        and the audio streams to copy through.

        Raises:
            SinkError: as :class:`FileSink`.
        """
        return cls(
            path,
            width=info.width,
            height=info.height,
            fps=info.fps,
            time_base=info.time_base,
            audio=info.audio,
            colorspace=info.colorspace,
            settings=settings,
        )

    def _add_video(
        self, codec: str, settings: FileSinkSettings, colorspace: tuple[int, int, int, int] | None
    ) -> av.video.stream.VideoStream:
        stream = self._container.add_stream(codec, rate=self._fps)
        stream.width, stream.height = self.width, self.height
        odd = self.width % 2 or self.height % 2
        if codec == "rawvideo":
            stream.pix_fmt = "yuv444p" if odd else "yuv420p"
        else:  # 4:2:0 needs even sizes; x264 takes 4:4:4 for odd ones
            stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        stream.time_base = self._tb
        cc = stream.codec_context
        cc.time_base = self._tb
        if codec in ("libx264", "libvpx-vp9", "libvpx"):
            cc.options = {"crf": str(settings.crf)}
            if codec == "libx264":
                cc.options["preset"] = settings.preset
                if self.path.suffix.lower() in FRAME_TIMED:
                    cc.options["bf"] = "0"  # AVI has no separate decode order for B-frames
            else:
                cc.options.update({"b": "0", "deadline": "realtime", "cpu-used": "8"})
        elif codec != "rawvideo":
            cc.bit_rate = 8_000_000
        self._colour: dict[str, Any] = {}
        if colorspace is not None:
            space, rng, primaries, trc = colorspace
            cc.colorspace, cc.color_range = space, rng
            cc.color_primaries, cc.color_trc = primaries, trc
            # convert with the tagged matrix and range too, not only tag them
            self._colour = colour_options(space, rng)
        return stream

    def _add_audio(self, template: av.audio.stream.AudioStream) -> av.stream.Stream:
        try:
            return self._container.add_stream_from_template(template)
        except ValueError as exc:
            raise SinkError(
                f"{self.path.suffix} cannot hold the input's {template.codec_context.name} "
                "audio; name the output .mkv (any codec) or .mp4"
            ) from exc

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        image = fit_to(checked_image(frame), self.width, self.height)
        vf = video_frame_from_rgb(image, self._video.pix_fmt, **self._colour)
        if frame.pts is not None and frame.time_base is not None:
            pts = round(Fraction(frame.pts) * frame.time_base / self._tb)
        else:
            pts = round(frame.index / self._fps / self._tb)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders need rising timestamps
        vf.pts, vf.time_base = pts, self._tb
        self._last_pts = pts
        self._mux(self._video.encode(vf))
        self.frames += 1

    def passthrough(self, packet: av.Packet) -> None:
        out = self._audio.get(packet.stream.index)
        if out is not None:
            packet.stream = out
            self._mux([packet])

    def _mux(self, packets: Sequence[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot write {self.path}: {one_line(str(exc), 200)}") from exc

    def close(self, *, complete: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if complete:
                self._mux(self._video.encode(None))  # flush the encoder's delayed frames
            self._container.close()
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if complete:
            self._stack.close()  # moves the finished file into place
            log.info("wrote %s (%d frames)", self.path, self.frames)
        else:
            err = SinkError("incomplete")
            self._stack.__exit__(SinkError, err, None)  # deletes the partial file
            log.warning("%s not written (run did not finish)", self.path)


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once links are resolved, or
    the same inode (a hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def check_writable(path: Path) -> None:
    """Raise :class:`SinkError` now, before any work, if ``path`` cannot be written (a
    symbolic link is checked, and later written, through: see :mod:`sharpcam.atomic`)."""
    path = destination(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SinkError(f"output {path} is a folder; name a file such as {path / 'sharp.mp4'}")
    if not parent.is_dir():
        raise SinkError(f"cannot write {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SinkError(
            f"cannot write {path}: folder {parent} is not writable; choose another path"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise SinkError(f"cannot write {path}: the file is read-only; choose another path")
    # Permission bits do not tell the whole story (root, read-only mounts, /proc): create
    # and remove a probe file where the temporary output will go.
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".sharpcam-probe-"):
            pass
    except OSError as exc:
        raise SinkError(
            f"cannot write {path}: folder {parent} does not take new files "
            f"({exc.strerror or exc}); choose another path"
        ) from None


# -- registry --------------------------------------------------------------------------------

#: Sink kinds by name (``--sink`` style selection and tests parametrize over it).
SINKS: dict[str, Callable[..., Sink]] = {}


def register_sink(name: str, factory: Callable[..., Sink]) -> None:
    """Add a sink kind under ``name`` (replacing any previous one)."""
    SINKS[name] = factory


register_sink("virtualcam", VirtualCameraSink)
register_sink("file", FileSink)
register_sink("preview", PreviewSink)
register_sink("null", NullSink)
