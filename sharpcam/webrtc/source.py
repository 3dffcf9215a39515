"""The receive-only mode's source: a sharpcam :class:`~sharpcam.sources.Source` (webcam or
video file) as an aiortc video track, and a fan-out that shares one track between peers.

:class:`SourceTrack` reads frames in its own worker thread (never on the event loop). A
file is played at its frame rate and starts over at its end, so a page that connects later
still gets video; a camera delivers at its own pace. Timestamps are in aiortc's 90 kHz
video clock and only increase (across a file's restarts too).

:class:`Fanout` reads a track in one task while at least one subscriber is live and gives
each subscriber the newest frame; with no subscriber nothing is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiortc import MediaStreamTrack
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError
from av import VideoFrame

from sharpcam.errors import SourceError
from sharpcam.sources import Frame, Source, list_cameras, open_source, parse_device
from sharpcam.webrtc.track import NewestSlot

log = logging.getLogger(__name__)

#: A file source this far behind its schedule (no one was reading) restarts the clock
#: instead of sending a burst of frames.
RESYNC_S = 0.5


class SourceTrack(MediaStreamTrack):
    """A live aiortc video track reading frames from a sharpcam source.

    Args:
        opener: opens the source (called once here, and again to restart a file at its end).
        repeat: start a file over at its end (cameras never end).

    Raises:
        SourceError: from ``opener``, when the source cannot be opened.

    ``recv()`` raises :class:`~aiortc.mediastreams.MediaStreamError` after :meth:`stop`,
    at the end of a file when ``repeat`` is off, or when the source fails (logged).
    """

    kind = "video"

    def __init__(self, opener: Callable[[], Source], *, repeat: bool = True) -> None:
        super().__init__()
        self._opener = opener
        self._repeat = repeat
        self._source: Source | None = opener()
        self.info = self._source.info
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sharpcam-source")
        self._fps = float(self.info.fps) if self.info.fps and self.info.fps > 0 else 25.0
        self._sent = 0
        self._anchor: float | None = None  # monotonic time of frame 0 (file schedule or camera)
        self._last_pts = -1

    async def recv(self) -> VideoFrame:
        """The next frame, paced at the file's frame rate (cameras: as they deliver)."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        try:
            frame = await loop.run_in_executor(self._executor, self._read)
        except (SourceError, RuntimeError) as exc:  # RuntimeError: executor shut down
            if self.readyState == "live":
                log.error("source %s failed, ending the stream: %s", self.info.name, exc)
            frame = None
        if frame is None:
            self.stop()
            raise MediaStreamError
        if self.info.live:
            if self._anchor is None:
                self._anchor = frame.captured
            pts = round((frame.captured - self._anchor) * VIDEO_CLOCK_RATE)
        else:
            pts = await self._wait_turn()
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        out = VideoFrame.from_ndarray(frame.image, format="rgb24")
        out.pts, out.time_base = pts, VIDEO_TIME_BASE
        return out

    async def _wait_turn(self) -> int:
        """Sleep until this frame is due on the file's schedule; return its pts."""
        now = time.monotonic()
        due = None if self._anchor is None else self._anchor + self._sent / self._fps
        if due is None or now - due > RESYNC_S:
            self._anchor = now - self._sent / self._fps
            due = now
        if due > now:
            await asyncio.sleep(due - now)
        pts = round(self._sent * VIDEO_CLOCK_RATE / self._fps)
        self._sent += 1
        return pts

    def _read(self) -> Frame | None:
        """Worker thread: the next frame, reopening a file at its end when repeating."""
        if self._source is None:
            return None
        frame = self._source.read()
        if frame is None and self._repeat and not self.info.live:
            self._source.close()
            self._source = self._opener()
            frame = self._source.read()
        return frame

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def stop(self) -> None:
        """End the track; the source is closed on the worker thread after any read in
        progress, and the thread ends."""
        if self.readyState == "live":
            super().stop()
            self._executor.submit(self._close_source)
            self._executor.shutdown(wait=False)

    def close(self) -> None:
        """:meth:`stop`, then wait for the worker thread to finish."""
        self.stop()
        self._executor.shutdown(wait=True)


class Subscription(MediaStreamTrack):
    """One subscriber's view of a :class:`Fanout`: the newest frame of the shared track.
    Stopping it unsubscribes (the source keeps running for the others)."""

    kind = "video"

    def __init__(self, fanout: Fanout) -> None:
        super().__init__()
        self._fanout = fanout
        self.slot: NewestSlot[VideoFrame] = NewestSlot()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._fanout._start()
        frame = await self.slot.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
        self.slot.finish()
        self._fanout._unsubscribe(self)


class Fanout:
    """Shares one video track between any number of :class:`Subscription` tracks.

    The source is read by one task, started by the first subscriber's ``recv()`` and
    cancelled when the last one stops (or by :meth:`close`). It does not own the source:
    stop that yourself. When the source ends, every subscription ends.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        self._source = source
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> Subscription:
        """A new live subscription (reading starts on its first ``recv()``)."""
        sub = Subscription(self)
        self._subscribers.add(sub)
        return sub

    @property
    def reading(self) -> bool:
        """Whether the source is being read now."""
        return self._task is not None and not self._task.done()

    def _start(self) -> None:
        if not self.reading:
            self._task = asyncio.create_task(self._run(), name="sharpcam-fanout")

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                for sub in tuple(self._subscribers):
                    sub.slot.put(frame)
        except MediaStreamError:
            for sub in tuple(self._subscribers):
                sub.slot.finish()

    async def close(self) -> None:
        """End every subscription and stop reading."""
        for sub in tuple(self._subscribers):
            sub.stop()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def open_source_track(spec: str) -> SourceTrack:
    """``--source`` as a track: a webcam index (``"0"``) or device path, or a video file.

    Raises:
        SourceError: the camera or file cannot be opened.
    """
    device = parse_device(spec)
    if isinstance(device, int) or spec.startswith("/dev/"):
        try:
            return SourceTrack(lambda: open_source(device=device))
        except SourceError as exc:  # its advice names the run command's flags
            log.info("--source %s: %s", spec, exc)
            others = [i for i in list_cameras() if i != device]
            hint = (
                f"cameras that open: {', '.join(map(str, others))} (try --source {others[0]})"
                if others
                else "no camera opens here"
            )
            raise SourceError(
                f"--source {spec}: camera {spec} did not open; {hint}; or pass a video file "
                "to --source (e.g. --source clip.mp4)"
            ) from exc
    path = Path(spec)
    if not path.is_file():
        raise SourceError(
            f"--source {spec}: no such video file; pass a webcam index (0) or a video file"
        )
    return SourceTrack(lambda: open_source(input=path))
