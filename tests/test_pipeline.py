"""The pipeline end to end: real ONNX Runtime, real PyAV encode/decode; the webcam is a fake
VideoCapture (no camera here) feeding the real capture thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_media import FakeCapture, audio_payloads, decode_rgb, make_clip, psnr, video_times
from helpers_models import unsharp_model

from sharpcam.engine import Engine
from sharpcam.errors import SinkError, SourceError
from sharpcam.pipeline import Mailbox, RunSettings, RunStats, run, run_file, run_live
from sharpcam.sinks import FileSink, NullSink, PreviewSink, Sink
from sharpcam.sources import CameraSource, FileSource, Frame, Source, SourceInfo

QUIET = RunSettings(status_every=0, progress=False)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(unsharp_model(tmp_path_factory.mktemp("m") / "unsharp.onnx"), provider="cpu")


class SlowEngine:
    """The real engine, made artificially slow (a model that cannot keep up)."""

    def __init__(self, engine: Engine, seconds: float) -> None:
        self.engine, self.seconds = engine, seconds
        self.last_ms = 0.0

    def process(self, frame: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        out = self.engine.process(frame)
        self.last_ms = self.seconds * 1e3 + self.engine.last_ms
        return out


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sharpcam-")]


class NumberedCamera(Source):
    """A live source whose frame ``n`` carries ``n`` in its first pixel, and which records
    the newest number it has handed out (the capture thread reads it)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.info = SourceInfo("numbered", 64, 48, Fraction(1000), live=True)
        self.interval = interval
        self.latest = -1

    def read(self) -> Frame:
        time.sleep(self.interval)
        n = self.latest + 1
        image = np.zeros((48, 64, 3), np.uint8)
        image[0, 0] = (n & 255, n >> 8 & 255, n >> 16 & 255)
        frame = Frame(image, n, time.monotonic())
        self.latest = n
        return frame

    def close(self) -> None:
        pass


class WitnessEngine:
    """The real engine, slowed, noting for each call the number of the frame it was given
    and the newest number captured at that moment."""

    def __init__(self, engine: Engine, camera: NumberedCamera, seconds: float) -> None:
        self.engine, self.camera, self.seconds = engine, camera, seconds
        self.seen: list[tuple[int, int]] = []

    def process(self, frame: np.ndarray) -> np.ndarray:
        got = int(frame[0, 0, 0]) | int(frame[0, 0, 1]) << 8 | int(frame[0, 0, 2]) << 16
        self.seen.append((got, self.camera.latest))
        time.sleep(self.seconds)
        return self.engine.process(frame)


class RecordingSink(Sink):
    """Keeps what it is sent; optionally asks to stop, or fails, after some frames."""

    name = "recording"

    def __init__(self, stop_after: int | None = None, fail_after: int | None = None) -> None:
        self.frames: list[Frame] = []
        self.originals: list[Frame | None] = []
        self.threads: set[int] = set()
        self.stop_after, self.fail_after = stop_after, fail_after
        self.closed: bool | None = None

    def send(self, frame: Frame, original: Frame | None = None) -> None:
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise SinkError("disk full")
        self.frames.append(frame)
        self.originals.append(original)
        self.threads.add(threading.get_ident())

    @property
    def stop_requested(self) -> bool:
        return self.stop_after is not None and len(self.frames) >= self.stop_after

    def close(self, *, complete: bool = True) -> None:
        self.closed = complete


class TestFileToFile:
    def test_every_frame_sharpened_with_timing_and_audio_kept(
        self, tmp_path: Path, engine: Engine
    ) -> None:
        clip, out = tmp_path / "call.mp4", tmp_path / "sharp.mp4"
        make_clip(clip, frames=20, width=160, height=96, audio=True)
        decoded_in = decode_rgb(clip)
        with FileSource(clip) as source:
            info = source.info
            with FileSink.for_source(out, info) as sink:
                # the bare model's frames, to compare each with it (the blend: test_temporal)
                stats = run(source, engine, [sink], RunSettings(0, False, stabilize=False))
        assert stats.frames_in == stats.frames_out == 20 and stats.dropped == 0
        assert stats.stop_reason == "end of file"
        decoded_out = decode_rgb(out)
        assert len(decoded_out) == 20 and decoded_out[0].shape == (96, 160, 3)
        assert video_times(out) == pytest.approx(video_times(clip), abs=1e-3)
        assert audio_payloads(out) == audio_payloads(clip) != []  # copied, not re-encoded
        for got, source_frame in zip(decoded_out, decoded_in, strict=True):
            want = engine.process(source_frame)
            assert psnr(got, want) > 32  # within H.264 (crf 18) tolerance
            assert psnr(got, want) > psnr(got, source_frame)  # and it is the sharpened one

    def test_real_clip_through_the_pipeline(
        self, tmp_path: Path, engine: Engine, video_dir: Path
    ) -> None:
        clip = video_dir / "xiph_akiyo_cif_352x288_150f.mp4"
        out = tmp_path / "akiyo.mkv"
        with FileSource(clip) as source:
            info = source.info
            with FileSink(out, width=info.width, height=info.height, fps=info.fps) as sink:
                stats = run_file(source, engine, [sink], RunSettings(progress=False, max_frames=30))
        assert stats.frames_out == 30 and len(decode_rgb(out)) == 30

    def test_sink_failure_stops_every_stage(self, tmp_path: Path, engine: Engine) -> None:
        clip = tmp_path / "c.mp4"
        make_clip(clip, frames=30)
        sink = RecordingSink(fail_after=3)
        with FileSource(clip) as source, pytest.raises(SinkError, match="disk full"):
            run_file(source, engine, [sink], QUIET)
        assert len(sink.frames) == 3
        assert not [t for t in threading.enumerate() if t.name.startswith("sharpcam-")]

    def test_source_failure_stops_every_stage(self, tmp_path: Path, engine: Engine) -> None:
        clip = tmp_path / "c.mp4"
        make_clip(clip, frames=30)

        class FailingSource(FileSource):
            """A real file source whose decoder gives up after 5 frames."""

            def read(self) -> Frame | None:
                frame = super().read()
                if frame is not None and frame.index == 5:
                    raise SourceError("cannot decode frame 6 of c.mp4: Invalid data")
                return frame

        sink = RecordingSink()
        with FailingSource(clip) as source, pytest.raises(SourceError, match="frame 6"):
            run_file(source, engine, [sink], QUIET)
        assert len(sink.frames) == 5
        assert not [t for t in threading.enumerate() if t.name.startswith("sharpcam-")]

    def test_interrupt_stops_every_stage(
        self, tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clip = tmp_path / "c.mp4"
        make_clip(clip, frames=30)
        slow = SlowEngine(engine, 0.0)
        real = slow.process
        calls: list[int] = []

        def interrupt(frame: np.ndarray) -> np.ndarray:
            calls.append(1)
            if len(calls) == 5:  # Ctrl-C while the model runs on frame 5
                raise KeyboardInterrupt
            return real(frame)

        monkeypatch.setattr(slow, "process", interrupt)
        sink = RecordingSink()
        with FileSource(clip) as source, pytest.raises(KeyboardInterrupt):
            run_file(source, slow, [sink], QUIET)
        assert wait_until(lambda: not stage_threads()), stage_threads()
        assert len(sink.frames) == 4

    def test_preview_runs_on_the_calling_thread(
        self, tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clip = tmp_path / "c.mp4"
        make_clip(clip, frames=5)
        shown_on: set[int] = set()
        monkeypatch.setenv("DISPLAY", ":fake")
        monkeypatch.setattr(cv2, "namedWindow", lambda *a, **k: None)
        monkeypatch.setattr(cv2, "imshow", lambda *a: shown_on.add(threading.get_ident()))
        monkeypatch.setattr(cv2, "waitKey", lambda *a: -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
        monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)
        other = RecordingSink()
        with FileSource(clip) as source, PreviewSink() as preview:
            run_file(source, engine, [preview, other], QUIET)
        assert shown_on == {threading.get_ident()}
        assert threading.get_ident() not in other.threads and len(other.frames) == 5
        assert all(o is not None for o in other.originals)


class TestLive:
    def test_the_model_always_gets_the_newest_frame(self, engine: Engine) -> None:
        """Structural, not timed: when ``process`` is called, the frame it holds is the
        newest captured (or the one before, if the capture thread is between reading a
        frame and leaving it in the mailbox). Handing out an older queued frame fails."""
        camera = NumberedCamera(interval=0.001)
        witness = WitnessEngine(engine, camera, seconds=0.02)
        sink = RecordingSink()
        stats = run_live(camera, witness, [sink], RunSettings(status_every=0, max_frames=20))
        assert len(witness.seen) == 20 == len(sink.frames)
        lag = [latest - got for got, latest in witness.seen]
        assert all(0 <= d <= 1 for d in lag), witness.seen
        got = [g for g, _ in witness.seen]
        assert got == sorted(got) and len(set(got)) == len(got)
        assert [f.index for f in sink.frames] == got  # the sink gets what the model made
        assert stats.dropped > 0 and stats.frames_in == stats.frames_out + stats.dropped

    def test_slow_model_drops_stale_frames_and_latency_stays_bounded(
        self, fake_camera: type[FakeCapture], engine: Engine
    ) -> None:
        slow = SlowEngine(engine, 0.04)  # 25 fps model, 500 fps camera
        sink = RecordingSink()
        with CameraSource(0) as camera:
            stats = run_live(camera, slow, [sink], RunSettings(status_every=0, max_frames=25))
        assert stats.frames_out == 25 == len(sink.frames)
        assert stats.dropped > 25  # most captured frames were stale by the time the model was free
        assert stats.frames_in == stats.frames_out + stats.dropped
        # every delivered frame was the newest: its index jumps ahead
        indices = [f.index for f in sink.frames]
        assert indices == sorted(indices) and indices[-1] - indices[0] > 2 * len(indices)
        # latency is about one model run, and does not grow (generous margins)
        assert max(stats.latency_ms) < 40 * 8
        assert np.median(stats.latency_ms[-5:]) < np.median(stats.latency_ms[:5]) + 100

    def test_camera_lost_mid_stream_ends_cleanly(
        self, fake_camera: type[FakeCapture], engine: Engine
    ) -> None:
        fake_camera.FAIL_AFTER = 12
        sink = RecordingSink()
        with CameraSource(0) as camera:
            stats = run_live(camera, engine, [sink], RunSettings(status_every=0))
        assert (
            stats.source_lost and "stopped delivering frames after 12 frames" in stats.source_lost
        )
        assert stats.stop_reason == stats.source_lost
        assert 1 <= len(sink.frames) <= 12
        assert stats.frames_in == 12 == stats.frames_out + stats.dropped

    def test_sink_can_end_the_run(self, fake_camera: type[FakeCapture], engine: Engine) -> None:
        sink = RecordingSink(stop_after=4)
        with CameraSource(0) as camera:
            stats = run(camera, engine, [sink], RunSettings(status_every=0))
        assert stats.stop_reason == "preview closed" and len(sink.frames) == 4

    def test_status_lines(self, fake_camera: type[FakeCapture], engine: Engine) -> None:
        lines: list[str] = []
        settings = RunSettings(status_every=0.05, max_frames=40)
        with CameraSource(0) as camera:
            run_live(camera, SlowEngine(engine, 0.005), [NullSink()], settings, report=lines.append)
        assert lines
        assert all(
            line.startswith("fps in ") and "| model " in line and line.split()[-2] == "dropped"
            for line in lines
        )

    def test_stop_event(self, fake_camera: type[FakeCapture], engine: Engine) -> None:
        stop = threading.Event()
        sink = RecordingSink()
        timer = threading.Timer(0.2, stop.set)
        timer.start()
        with CameraSource(0) as camera:
            stats = run_live(camera, engine, [sink], RunSettings(status_every=0), stop=stop)
        assert stats.stop_reason == "stopped" and sink.frames


class TestMailbox:
    def test_newest_wins_and_drops_are_reported(self) -> None:
        box = Mailbox()
        frames = [Frame(np.zeros((1, 1, 3), np.uint8), i, 0.0) for i in range(3)]
        assert box.put(frames[0]) is False
        assert box.put(frames[1]) is True  # frame 0 dropped
        assert box.get(timeout=0) is frames[1]
        assert box.get(timeout=0.01) is None
        box.put(frames[2])
        box.close()
        assert box.get() is frames[2] and box.get() is None

    def test_get_wakes_on_put(self) -> None:
        box = Mailbox()
        item = Frame(np.zeros((1, 1, 3), np.uint8), 0, 0.0)
        threading.Timer(0.05, box.put, args=(item,)).start()
        assert box.get(timeout=5) is item


def test_summary_line() -> None:
    stats = RunStats(frames_in=10, frames_out=8, dropped=2, started=0.0, ended=2.0)
    stats.model_ms, stats.host_ms, stats.latency_ms = [100.0] * 8, [2.0] * 8, [120.0] * 8
    assert stats.summary() == (
        "10 frames in, 8 out, 2 dropped in 2.0 s (4.0 fps out); model 100.0 ms median, "
        "100.0 p95; host 2.0 ms; latency 120 ms median, 120 p95; 60% of the time outside "
        "the model"
    )
    assert Fraction(stats.outside_model_share()).limit_denominator(10) == Fraction(3, 5)
