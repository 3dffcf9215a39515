"""The processing track: sharpens the newest frame of a video track, off the event loop.

:class:`SharpenTrack` wraps any aiortc video track (a peer's camera, or a local source).
Two small tasks run per track while it is live:

* a *reader* drains the source as fast as frames come and keeps only the newest one, so
  frames never queue up in front of a slow model (a frame replaced before the model took it
  is counted in ``dropped``);
* a *processor* hands the newest frame to a worker thread (an :class:`~concurrent.futures.Executor`
  shared by all peers) that converts it to ``HxWx3 uint8 RGB``, runs the model, composes the
  split view and converts back; the result waits for the encoder in a one-frame slot (a
  result replaced before the encoder took it is also counted in ``dropped``).

Delay therefore stays bounded by one frame interval plus one model call, however slow the
model is. Returned frames keep the source frame's ``pts`` and ``time_base``, so RTP
timestamps stay consistent; ``pts`` only ever increases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from sharpcam.frames import rgb_from_video_frame
from sharpcam.temporal import Stabilizer

log = logging.getLogger(__name__)

T = TypeVar("T")


class FrameProcessor(Protocol):
    """What the relay needs of a model: ``sharpcam.engine.Engine`` is one.

    ``process`` takes an ``HxWx3 uint8 RGB`` frame of any size and returns a new uint8
    array ``scale`` times its height and width (``scale``: an optional attribute, 1 when
    absent; a ×2 model has 2). It is called from one worker thread at a time.
    """

    def process(self, frame: np.ndarray) -> np.ndarray: ...


def scale_of(processor: object) -> int:
    """The processor's output scale: its ``scale`` attribute, else 1."""
    scale = getattr(processor, "scale", 1)
    return scale if isinstance(scale, int) and scale >= 1 else 1


def plain_upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """``rgb`` enlarged ``scale`` times by bicubic interpolation: what a receiver shows
    without sharpcam (itself when ``scale`` is 1)."""
    if scale == 1:
        return rgb
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


@dataclass(frozen=True)
class View:
    """How a peer wants its stream: sharpening on or off, and where the split divider is.

    Args:
        sharpen: run the model; when ``False`` frames pass through untouched.
        split: share of the width, from the left, that shows the *original* frame
            (0.0: all sharpened, 1.0: all original). The rest shows the sharpened one.

    Raises:
        ValueError: ``split`` outside ``[0, 1]``.
    """

    sharpen: bool = True
    split: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.split <= 1.0:
            raise ValueError(f"split must be in [0, 1], got {self.split}")


def compose_split(original: np.ndarray, sharpened: np.ndarray, split: float) -> np.ndarray:
    """The split view: columns left of ``round(split * W)`` from ``original``, the rest from
    ``sharpened``. Both are ``HxWx3 uint8``; the result is a new array of the same shape
    unless ``split`` is 0 or 1, which return ``sharpened`` or ``original`` themselves.

    Raises:
        ValueError: the two frames differ in shape.
    """
    if original.shape != sharpened.shape:
        raise ValueError(
            f"the model returned shape {sharpened.shape} for a frame of shape {original.shape}"
        )
    x = round(split * original.shape[1])
    if x <= 0:
        return sharpened
    if x >= original.shape[1]:
        return original
    return np.concatenate((original[:, :x], sharpened[:, x:]), axis=1)


@dataclass(frozen=True)
class TrackStats:
    """A snapshot of one track's figures (JSON-ready through :func:`dataclasses.asdict`).

    Counters are totals since the track started; rates and times cover the last
    ``window`` frames sent.

    Attributes:
        frames_in: frames read from the source.
        frames_processed: frames the worker finished.
        frames_out: frames handed to the encoder.
        dropped: stale frames skipped (source frames replaced before the model took them,
            results replaced before the encoder took them, frames whose ``pts`` went back).
        errors: frames the model failed on (sent unsharpened instead).
        fps: frames handed to the encoder per second.
        model_ms, model_ms_p95: median and 95th percentile of the model call alone
            (0 while sharpening is off).
        server_ms: median time from a frame's arrival to its result reaching the encoder.
        sharpen, split: the current :class:`View`.
        width_in, height_in: size of the last frame received (0 before the first).
        width_out, height_out: size of the last frame sent (``scale`` times the input).
    """

    frames_in: int = 0
    frames_processed: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    fps: float = 0.0
    model_ms: float = 0.0
    model_ms_p95: float = 0.0
    server_ms: float = 0.0
    sharpen: bool = True
    split: float = 0.5
    width_in: int = 0
    height_in: int = 0
    width_out: int = 0
    height_out: int = 0


class NewestSlot(Generic[T]):
    """A one-item mailbox: :meth:`put` replaces what is there, :meth:`get` waits for an item.

    ``replaced`` counts items overwritten before anyone took them. After :meth:`finish`,
    :meth:`get` returns what is left, then ``None`` forever. Event-loop only (not
    thread-safe).
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._ready = asyncio.Event()
        self._finished = False
        self.replaced = 0

    def put(self, item: T) -> None:
        if self._item is not None:
            self.replaced += 1
        self._item = item
        self._ready.set()

    def finish(self) -> None:
        self._finished = True
        self._ready.set()

    async def get(self) -> T | None:
        await self._ready.wait()
        item, self._item = self._item, None
        if not self._finished:
            self._ready.clear()
        return item


@dataclass
class _Arrival:
    frame: VideoFrame
    arrived: float  # time.perf_counter() when the reader got it


@dataclass
class _Result:
    frame: VideoFrame
    arrived: float
    model_ms: float | None  # None: the model did not run on this frame


@dataclass
class _Window:
    """Timings of the last frames sent, for rates and medians."""

    size: int
    sent: deque[float] = field(default_factory=deque)
    model: deque[float] = field(default_factory=deque)
    server: deque[float] = field(default_factory=deque)

    def add(self, sent: float, model_ms: float | None, server_ms: float) -> None:
        for q, value in ((self.sent, sent), (self.server, server_ms)):
            q.append(value)
            if len(q) > self.size:
                q.popleft()
        if model_ms is not None:
            self.model.append(model_ms)
            if len(self.model) > self.size:
                self.model.popleft()


def _percentile(values: deque[float], q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0


class SharpenTrack(MediaStreamTrack):
    """A video track that yields the frames of ``source``, sharpened, newest first.

    Args:
        source: any live aiortc video track. This track owns it: stopping this track stops
            ``source`` too.
        processor: the model (see :class:`FrameProcessor`).
        executor: where the conversion and model run (share one single-thread executor
            between tracks so model calls never overlap).
        view: the initial :class:`View`; assign :attr:`view` to change it live.
        window: how many recent frames the figures in :meth:`stats` cover.
        stabilize: blend the model's outputs over time where the input is still
            (:class:`~sharpcam.temporal.Stabilizer`, one per track: the state is per stream);
            it restarts whenever a frame goes out unsharpened.

    ``recv()`` raises :class:`~aiortc.mediastreams.MediaStreamError` once the source has
    ended or the track is stopped. If the model raises on a frame, the frame is sent
    unsharpened, ``errors`` is counted and the first error is logged.
    """

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        processor: FrameProcessor,
        *,
        executor: Executor,
        view: View | None = None,
        window: int = 50,
        stabilize: bool = True,
    ) -> None:
        super().__init__()
        self._stabilizer = Stabilizer() if stabilize else None
        self.view = view or View()
        self._source = source
        self._processor = processor
        self._executor = executor
        self._incoming: NewestSlot[_Arrival] = NewestSlot()
        self._outgoing: NewestSlot[_Result] = NewestSlot()
        self._tasks: list[asyncio.Task[None]] = []
        self._window = _Window(window)
        self._frames_in = 0
        self._frames_processed = 0
        self._frames_out = 0
        self._errors = 0
        self._out_of_order = 0
        self._last_pts: int | None = None
        self._size_in = (0, 0)
        self._size_out = (0, 0)

    # --- aiortc's side ------------------------------------------------------------------

    async def recv(self) -> VideoFrame:
        """The next sharpened frame (waits for one); see the class docstring."""
        if self.readyState != "live":
            raise MediaStreamError
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._read(), name=f"sharpcam-read-{self.id[:8]}"),
                asyncio.create_task(self._work(), name=f"sharpcam-work-{self.id[:8]}"),
            ]
        result = await self._outgoing.get()
        if result is None:
            self.stop()
            raise MediaStreamError
        now = time.perf_counter()
        self._frames_out += 1
        self._window.add(now, result.model_ms, (now - result.arrived) * 1000.0)
        return result.frame

    def stop(self) -> None:
        """End this track and its source; cancel the reader and processor tasks."""
        if self.readyState == "live":
            super().stop()
        for task in self._tasks:
            task.cancel()
        self._incoming.finish()
        self._outgoing.finish()
        self._source.stop()

    # --- figures ------------------------------------------------------------------------

    def stats(self) -> TrackStats:
        """The figures now (see :class:`TrackStats`)."""
        w = self._window
        span = w.sent[-1] - w.sent[0] if len(w.sent) > 1 else 0.0
        return TrackStats(
            frames_in=self._frames_in,
            frames_processed=self._frames_processed,
            frames_out=self._frames_out,
            dropped=self._incoming.replaced + self._outgoing.replaced + self._out_of_order,
            errors=self._errors,
            fps=(len(w.sent) - 1) / span if span > 0 else 0.0,
            model_ms=_percentile(w.model, 50) if self.view.sharpen else 0.0,
            model_ms_p95=_percentile(w.model, 95) if self.view.sharpen else 0.0,
            server_ms=_percentile(w.server, 50),
            sharpen=self.view.sharpen,
            split=self.view.split,
            width_in=self._size_in[0],
            height_in=self._size_in[1],
            width_out=self._size_out[0],
            height_out=self._size_out[1],
        )

    # --- the two loops ------------------------------------------------------------------

    async def _read(self) -> None:
        """Drain the source; only the newest frame waits for the model."""
        try:
            while True:
                frame = await self._source.recv()
                if not isinstance(frame, VideoFrame):
                    continue
                self._frames_in += 1
                self._incoming.put(_Arrival(frame, time.perf_counter()))
        except MediaStreamError:
            pass
        finally:
            self._incoming.finish()

    async def _work(self) -> None:
        """Send the newest frame through the model in the executor, one at a time."""
        loop = asyncio.get_running_loop()
        try:
            while (arrival := await self._incoming.get()) is not None:
                pts = arrival.frame.pts
                if self._last_pts is not None and pts is not None and pts <= self._last_pts:
                    self._out_of_order += 1  # sending it would make pts go backwards
                    continue
                view = self.view
                frame, model_ms = await loop.run_in_executor(
                    self._executor, self._render, arrival.frame, view
                )
                self._frames_processed += 1
                self._last_pts = frame.pts
                self._outgoing.put(_Result(frame, arrival.arrived, model_ms))
        finally:
            self._outgoing.finish()

    def _render(self, frame: VideoFrame, view: View) -> tuple[VideoFrame, float | None]:
        """Worker thread: frame → RGB → model → split view → frame with the same pts.

        For a ×``scale`` processor the "original" side is the frame enlarged by plain
        bicubic interpolation, so both sides, and every frame sent, have the model's output
        size whether sharpening is on or off."""
        rgb = rgb_from_video_frame(frame)
        scale = scale_of(self._processor)
        model_ms: float | None = None
        base = plain_upscale(rgb, scale)
        shown = base
        if view.sharpen and view.split < 1.0:
            start = time.perf_counter()
            try:
                sharp = self._processor.process(rgb)
                model_ms = (time.perf_counter() - start) * 1000.0
                sharp = _check_output(sharp, base)
                if self._stabilizer is not None:
                    sharp = self._stabilizer(rgb, sharp)
                shown = compose_split(base, sharp, view.split)
            except Exception as exc:
                self._errors += 1
                if self._errors == 1:
                    log.error(
                        "the model failed on a %s frame; sending it unsharpened: %s", rgb.shape, exc
                    )
        if shown is base and self._stabilizer is not None:
            self._stabilizer.reset()  # the next sharpened frame must not blend with a stale one
        self._size_in = (rgb.shape[1], rgb.shape[0])
        self._size_out = (shown.shape[1], shown.shape[0])
        out = VideoFrame.from_ndarray(np.ascontiguousarray(shown), format="rgb24")
        out.pts = frame.pts
        out.time_base = frame.time_base
        return out, model_ms


def _check_output(sharp: object, rgb: np.ndarray) -> np.ndarray:
    if not isinstance(sharp, np.ndarray) or sharp.dtype != np.uint8 or sharp.shape != rgb.shape:
        if isinstance(sharp, np.ndarray):
            got = f"{sharp.dtype} {sharp.shape}"
        else:
            got = type(sharp).__name__
        raise ValueError(f"the model returned {got}, expected uint8 {rgb.shape}")
    return sharp
