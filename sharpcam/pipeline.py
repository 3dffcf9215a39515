"""Move frames from a source through the engine to the sinks, live or from a file.

Live (a camera): a capture thread reads frames as fast as the camera delivers them and
leaves only the newest in a one-slot :class:`Mailbox`; the processing loop always takes
the newest, so a slow model lowers the output frame rate but never makes the call lag:
latency stays about one capture interval plus one model run, and every frame that was
overwritten before it could be processed is counted as *dropped*.

File: every frame is processed in order. Decoding, inference and encoding run in three
threads joined by short queues (so the cores stay busy while one stage waits), audio
packets travel the same queues as frames and reach the muxer in file order, and frame
timestamps are kept.

Both modes keep :class:`RunStats` and print a status line every few seconds (live) or a
progress bar (file), then a summary.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from sharpcam.sinks import PreviewSink, Sink
from sharpcam.sources import Frame, Source, SourceLost
from sharpcam.temporal import Stabilizer

log = logging.getLogger(__name__)


class Processor(Protocol):
    """What the pipeline needs of an engine (:class:`sharpcam.engine.Engine` is one):
    ``process`` maps an ``HxWx3 uint8 RGB`` image to one of the same shape (or ``scale``
    times it, for a ×2 model). ``last_ms`` (model time) and ``last_host_ms`` (host-side
    time), if present, feed the stats; ``status_note``, if present and not empty (a tier
    step-down), ends the live status line."""

    def process(self, frame: np.ndarray) -> np.ndarray: ...


@dataclass
class RunStats:
    """Counters and timings of one run (times in milliseconds)."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    model_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    process_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stop_reason: str = ""
    source_lost: str | None = None
    """Set (to the one-line reason) when a live source stopped delivering frames."""
    partial: str | None = None
    """Set (to one line with the frame count) when a file ended before the frames its
    container announces, or at a demux/decode error."""

    @property
    def elapsed(self) -> float:
        """Seconds from start to end (or to now while running)."""
        return (self.ended or time.monotonic()) - self.started

    def outside_model_share(self) -> float:
        """Share of the wall time not spent inside the model (0..1)."""
        wall = self.elapsed * 1e3
        return max(0.0, 1.0 - sum(self.model_ms) / wall) if wall > 0 else 0.0

    def summary(self) -> str:
        """One line: counts, rate, model and latency percentiles."""
        fps = self.frames_out / self.elapsed if self.elapsed > 0 else 0.0
        parts = [
            f"{self.frames_in} frames in, {self.frames_out} out, {self.dropped} dropped "
            f"in {self.elapsed:.1f} s ({fps:.1f} fps out)"
        ]
        if self.model_ms:
            parts.append(
                f"model {_pct(self.model_ms, 50):.1f} ms median, {_pct(self.model_ms, 95):.1f} p95"
            )
        if self.host_ms:
            parts.append(f"host {_pct(self.host_ms, 50):.1f} ms")
        if self.latency_ms:
            lat = self.latency_ms
            parts.append(f"latency {_pct(lat, 50):.0f} ms median, {_pct(lat, 95):.0f} p95")
        if self.model_ms:
            parts.append(f"{self.outside_model_share():.0%} of the time outside the model")
        return "; ".join(parts)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class Mailbox:
    """A one-slot hand-over where the newest item wins.

    :meth:`put` replaces whatever is waiting and says whether something was (a *drop*);
    :meth:`get` waits for an item and takes it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Frame | None = None
        self._closed = False

    def put(self, item: Frame) -> bool:
        """Leave ``item``; ``True`` if it replaced one nobody took (that one is dropped)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> Frame | None:
        """The waiting item, waiting up to ``timeout`` s; ``None`` on timeout or once
        :meth:`close` was called and nothing is waiting."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake any waiting :meth:`get`; later gets return what is left, then ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> bool:
        """Drop what is waiting; ``True`` if there was something."""
        with self._cond:
            had, self._item = self._item is not None, None
            return had


@dataclass(frozen=True)
class RunSettings:
    """How a run behaves.

    Attributes:
        status_every: seconds between status lines in live mode (0: none).
        progress: show a progress bar in file mode.
        max_frames: stop after this many output frames (``None``: no limit).
        stabilize: run the model's outputs through a :class:`~sharpcam.temporal.Stabilizer`
            (a motion-aware temporal blend against flicker; ``--no-stabilize`` turns it off).
    """

    status_every: float = 5.0
    progress: bool = True
    max_frames: int | None = None
    stabilize: bool = True


def _stabilizer(settings: RunSettings) -> Stabilizer | None:
    return Stabilizer() if settings.stabilize else None


def _sharpen(
    engine: Processor, frame: Frame, stats: RunStats, stabilizer: Stabilizer | None = None
) -> Frame:
    t0 = time.perf_counter()
    image = engine.process(frame.image)
    if stabilizer is not None:
        image = stabilizer(frame.image, image)
    stats.process_ms.append((time.perf_counter() - t0) * 1e3)
    if (ms := getattr(engine, "last_ms", None)) is not None:
        stats.model_ms.append(float(ms))
    if (host := getattr(engine, "last_host_ms", None)) is not None:
        stats.host_ms.append(float(host))
    return replace(frame, image=image)


def _stop_requested(sinks: Sequence[Sink]) -> bool:
    return any(s.stop_requested for s in sinks)


# -- live ------------------------------------------------------------------------------------


def run_live(
    source: Source,
    engine: Processor,
    sinks: Sequence[Sink],
    settings: RunSettings = RunSettings(),
    *,
    report: Callable[[str], None] = log.info,
    stop: threading.Event | None = None,
) -> RunStats:
    """Process a live source, newest frame first, until it ends or is stopped.

    Ends on: ``stop`` being set, a sink asking (preview closed), ``max_frames``,
    ``KeyboardInterrupt`` (Ctrl-C: a normal end), or the source being lost.

    Returns:
        The stats; ``stop_reason`` says why it ended, and ``source_lost`` is set if the
        camera stopped delivering frames (the run then ends cleanly like any other; the
        caller still closes the sinks as complete and decides the exit status).
    """
    stats = RunStats()
    stop = stop or threading.Event()
    mailbox = Mailbox()
    stabilizer = _stabilizer(settings)
    lost: list[SourceLost] = []
    lock = threading.Lock()

    def capture() -> None:
        try:
            while not stop.is_set():
                frame = source.read()
                if frame is None:
                    break
                with lock:
                    stats.frames_in += 1
                    if mailbox.put(frame):
                        stats.dropped += 1
        except SourceLost as exc:
            lost.append(exc)
        except Exception as exc:  # reported as a lost source, never silently
            lost.append(SourceLost(f"{source.info.name} failed: {exc}"))
        finally:
            mailbox.close()

    thread = threading.Thread(target=capture, name="sharpcam-capture", daemon=True)
    thread.start()
    last_status, window_in, window_out = time.monotonic(), 0, 0
    try:
        while not stop.is_set():
            frame = mailbox.get(timeout=0.5)
            if frame is None:
                if not thread.is_alive():
                    break
                continue
            out = _sharpen(engine, frame, stats, stabilizer)
            for sink in sinks:
                sink.send(out, frame)
            stats.frames_out += 1
            stats.latency_ms.append((time.monotonic() - frame.captured) * 1e3)
            if _stop_requested(sinks):
                stats.stop_reason = "preview closed"
                break
            if settings.max_frames is not None and stats.frames_out >= settings.max_frames:
                stats.stop_reason = f"{settings.max_frames} frames done"
                break
            now = time.monotonic()
            if settings.status_every and now - last_status >= settings.status_every:
                line = _status_line(stats, now - last_status, window_in, window_out)
                if note := getattr(engine, "status_note", ""):
                    line += f" | {note}"
                report(line)
                last_status, window_in, window_out = now, stats.frames_in, stats.frames_out
        if stop.is_set() and not stats.stop_reason:
            stats.stop_reason = "stopped"
    except KeyboardInterrupt:
        stats.stop_reason = "interrupted (Ctrl-C)"
    finally:
        stop.set()
        thread.join(timeout=2.0)
        with lock:
            if mailbox.discard():
                stats.dropped += 1
        stats.ended = time.monotonic()
    if lost and not stats.stop_reason:
        stats.stop_reason = stats.source_lost = str(lost[0])
    stats.stop_reason = stats.stop_reason or "source ended"
    return stats


def _status_line(stats: RunStats, window: float, seen_in: int, seen_out: int) -> str:
    recent = max(stats.frames_out - seen_out, 1)
    model = stats.model_ms[-recent:]
    lat = stats.latency_ms[-recent:]
    fps_in = (stats.frames_in - seen_in) / window
    fps_out = (stats.frames_out - seen_out) / window
    return (
        f"fps in {fps_in:.1f} | out {fps_out:.1f}"
        f" | model {statistics.fmean(model) if model else 0:.1f} ms"
        f" | latency {statistics.fmean(lat) if lat else 0:.0f} ms | dropped {stats.dropped}"
    )


# -- file --------------------------------------------------------------------------------------

_END = object()


def run_file(
    source: Source,
    engine: Processor,
    sinks: Sequence[Sink],
    settings: RunSettings = RunSettings(),
    *,
    stop: threading.Event | None = None,
) -> RunStats:
    """Process every frame of a (non-live) source, in order, keeping timestamps; copy
    its audio packets through to sinks that take them.

    Preview sinks run on the calling thread (GUI toolkits need it); other sinks run on a
    writer thread so encoding overlaps inference.

    Returns:
        The stats (``stop_reason`` says why it ended).

    Raises:
        Whatever a stage raised (``SourceError``, ``SinkError``...), after stopping the
        other stages; ``KeyboardInterrupt`` likewise. Sinks are left for the caller to
        close (complete or not).
    """
    stats = RunStats()
    stop = stop or threading.Event()
    stabilizer = _stabilizer(settings)
    inbox: queue.Queue[object] = queue.Queue(maxsize=8)
    outbox: queue.Queue[object] = queue.Queue(maxsize=8)
    errors: list[BaseException] = []
    on_main = [s for s in sinks if isinstance(s, PreviewSink)]
    on_writer = [s for s in sinks if not isinstance(s, PreviewSink)]

    def put(q: queue.Queue[object], item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            while not stop.is_set():
                frame = source.read()
                for packet in source.take_packets():
                    put(inbox, packet)
                if frame is None:
                    break
                put(inbox, frame)
        except BaseException as exc:
            errors.append(exc)
        finally:
            put(inbox, _END)

    def write() -> None:
        try:
            while True:
                try:
                    item = outbox.get(timeout=0.2)
                except queue.Empty:
                    if stop.is_set():  # the run was abandoned: nothing more will come
                        break
                    continue
                if item is _END:
                    break
                if isinstance(item, tuple):
                    out, original = item
                    for sink in on_writer:
                        sink.send(out, original)
                else:
                    for sink in on_writer:
                        sink.passthrough(item)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    bar = _progress(source, settings)
    reader = threading.Thread(target=read, name="sharpcam-read", daemon=True)
    writer = threading.Thread(target=write, name="sharpcam-write", daemon=True)
    reader.start()
    writer.start()
    try:
        while not stop.is_set():
            try:
                item = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                break
            if not isinstance(item, Frame):
                put(outbox, item)
                continue
            stats.frames_in += 1
            out = _sharpen(engine, item, stats, stabilizer)
            for sink in on_main:
                sink.send(out, item)
            put(outbox, (out, item))
            stats.frames_out += 1
            if bar is not None:
                bar.update(1)
                if stats.frames_out % 10 == 0 and stats.model_ms:
                    bar.set_postfix_str(f"model {statistics.fmean(stats.model_ms[-10:]):.0f} ms")
            if _stop_requested(on_main):
                stats.stop_reason = "preview closed"
                break
            if settings.max_frames is not None and stats.frames_out >= settings.max_frames:
                stats.stop_reason = f"{settings.max_frames} frames done"
                break
        while writer.is_alive():  # let the writer finish what is queued, then end
            try:
                outbox.put(_END, timeout=0.2)
                break
            except queue.Full:
                continue
        writer.join()
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        reader.join(timeout=2.0)
        writer.join(timeout=5.0)
        if bar is not None:
            bar.close()
        stats.ended = time.monotonic()
    if errors:
        raise errors[0]
    if not stats.stop_reason:
        stats.partial = partial_input(source, stats.frames_in)
    stats.stop_reason = stats.stop_reason or "end of file"
    return stats


def partial_input(source: Source, frames: int) -> str | None:
    """One line if a file that ended after ``frames`` frames was cut short: a read error
    ended it, or its container announced more frames; else ``None``."""
    expected = source.info.frames
    if source.ended_early is None and (not expected or frames >= expected):
        return None
    count = f"{frames} of {expected}" if expected else f"{frames}"
    why = source.ended_early or "the file is truncated"
    return f"{source.info.name} ended after {count} frames ({why})"


def _progress(source: Source, settings: RunSettings) -> Any:
    if not settings.progress:
        return None
    from tqdm import tqdm

    total = source.info.frames
    if settings.max_frames is not None:
        total = min(total, settings.max_frames) if total else settings.max_frames
    return tqdm(total=total, unit="frame", desc=source.info.name, leave=False, dynamic_ncols=True)


def run(
    source: Source,
    engine: Processor,
    sinks: Sequence[Sink],
    settings: RunSettings = RunSettings(),
    *,
    report: Callable[[str], None] = log.info,
    stop: threading.Event | None = None,
) -> RunStats:
    """:func:`run_live` for a live source, :func:`run_file` otherwise."""
    if source.info.live:
        return run_live(source, engine, sinks, settings, report=report, stop=stop)
    return run_file(source, engine, sinks, settings, stop=stop)
