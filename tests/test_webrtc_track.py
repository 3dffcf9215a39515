"""SharpenTrack: newest frame wins, stale frames are counted, timestamps are kept.

The sources are real aiortc tracks fed by the test, so every step is deterministic: the
processor blocks until the test lets it go.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.register_assert_rewrite("conftest_browser")

from aiortc.mediastreams import MediaStreamError  # noqa: E402
from conftest_browser import ColourTrack, QueueTrack, wait_until  # noqa: E402

from sharpcam.webrtc.track import SharpenTrack, View, compose_split  # noqa: E402

pytest_plugins = ["conftest_browser"]  # fixtures: invert_engine


class GatedInvert:
    """Inverts, but each call waits until the test opens the gate; records what it saw."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[int] = []

    def process(self, frame: np.ndarray) -> np.ndarray:
        self.seen.append(int(frame[0, 0, 0]))
        self.gate.wait(timeout=30)
        return 255 - frame


class X2Invert:
    """A ×2 processor: each pixel becomes a 2x2 block, inverted (``scale`` says 2)."""

    scale = 2

    def process(self, frame: np.ndarray) -> np.ndarray:
        return 255 - np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)


class Broken:
    def process(self, frame: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


class WrongShape:
    def process(self, frame: np.ndarray) -> np.ndarray:
        return frame[:8]


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown()


class TestComposeSplit:
    def test_columns_left_of_the_divider_are_original(self) -> None:
        original = np.zeros((4, 10, 3), np.uint8)
        sharp = np.full((4, 10, 3), 255, np.uint8)
        out = compose_split(original, sharp, 0.3)
        assert out.shape == (4, 10, 3)
        assert (out[:, :3] == 0).all() and (out[:, 3:] == 255).all()

    def test_ends_return_one_side(self) -> None:
        original = np.zeros((4, 10, 3), np.uint8)
        sharp = np.full((4, 10, 3), 255, np.uint8)
        assert compose_split(original, sharp, 0.0) is sharp
        assert compose_split(original, sharp, 1.0) is original

    def test_shape_mismatch_names_both_shapes(self) -> None:
        with pytest.raises(
            ValueError, match=r"\(4, 10, 3\).*\(4, 9, 3\)|\(4, 9, 3\).*\(4, 10, 3\)"
        ):
            compose_split(np.zeros((4, 10, 3), np.uint8), np.zeros((4, 9, 3), np.uint8), 0.5)


def test_view_rejects_a_split_outside_0_1() -> None:
    with pytest.raises(ValueError, match="split must be in"):
        View(split=1.5)


def test_newest_frame_wins_and_stale_frames_are_counted(executor) -> None:
    async def run() -> None:
        source, model = QueueTrack(), GatedInvert()
        track = SharpenTrack(source, model, executor=executor, view=View(split=0.0))
        first = asyncio.ensure_future(track.recv())
        source.push(0, pts=0)
        await wait_until(lambda: model.seen == [0], "the model to take frame 0")
        for i in range(1, 10):  # nine frames arrive while the model is busy
            source.push(10 * i, pts=3000 * i)
        await wait_until(lambda: track.stats().frames_in == 10, "the reader to drain the source")
        model.gate.set()
        out0 = await first
        out1 = await track.recv()
        assert model.seen == [0, 90], "the model must skip straight to the newest frame"
        assert [out0.pts, out1.pts] == [0, 27000]
        assert out0.time_base == out1.time_base == source.time_base
        assert out1.to_ndarray(format="rgb24")[0, 0, 0] == 255 - 90
        stats = track.stats()
        assert (stats.frames_in, stats.frames_processed, stats.frames_out) == (10, 2, 2)
        assert stats.dropped == 8
        track.stop()

    asyncio.run(run())


def test_results_the_encoder_missed_are_replaced_and_counted(executor) -> None:
    async def run() -> None:
        source, model = QueueTrack(), GatedInvert()
        model.gate.set()
        track = SharpenTrack(source, model, executor=executor, view=View(split=0.0))
        pending = asyncio.ensure_future(track.recv())
        source.push(1, pts=1)
        assert (await pending).pts == 1
        source.push(2, pts=2)  # the encoder is not asking: results pile into one slot
        await wait_until(lambda: track.stats().frames_processed == 2, "frame 2 processed")
        source.push(3, pts=3)
        await wait_until(lambda: track.stats().frames_processed == 3, "frame 3 processed")
        newest = await track.recv()
        assert newest.pts == 3 and track.stats().dropped == 1
        track.stop()

    asyncio.run(run())


def test_pts_never_goes_back(executor) -> None:
    async def run() -> None:
        source, model = QueueTrack(), GatedInvert()
        model.gate.set()
        track = SharpenTrack(source, model, executor=executor)
        pending = asyncio.ensure_future(track.recv())
        source.push(1, pts=9000)
        assert (await pending).pts == 9000
        source.push(2, pts=6000)  # out of order: must not be sent
        source.push(3, pts=12000)
        assert (await track.recv()).pts == 12000
        assert model.seen == [1, 3] and track.stats().dropped == 1
        track.stop()

    asyncio.run(run())


def test_sharpen_off_and_split_change_live(invert_engine, executor) -> None:
    async def run() -> None:
        source = QueueTrack()
        track = SharpenTrack(source, invert_engine, executor=executor, view=View(split=0.0))
        source.push(100, pts=1)
        assert (await track.recv()).to_ndarray(format="rgb24")[0, 0, 0] == 155
        track.view = View(sharpen=False)
        source.push(100, pts=2)
        assert (await track.recv()).to_ndarray(format="rgb24")[0, 0, 0] == 100
        assert track.stats().model_ms == 0.0 and not track.stats().sharpen
        track.view = View(split=0.5)
        source.push(100, pts=3)
        row = (await track.recv()).to_ndarray(format="rgb24")[0, :, 0]
        assert (row[:8] == 100).all() and (row[8:] == 155).all()
        assert track.stats().model_ms > 0
        track.stop()

    asyncio.run(run())


def test_a_x2_processor_is_split_against_a_plain_upscale(executor) -> None:
    async def run() -> None:
        source = QueueTrack()  # 16x16 frames
        track = SharpenTrack(source, X2Invert(), executor=executor, view=View(split=0.5))
        source.push(100, pts=1)
        frame = await track.recv()
        rgb = frame.to_ndarray(format="rgb24")
        assert rgb.shape == (32, 32, 3) and frame.pts == 1
        # left: the frame enlarged by plain interpolation; right: the model's ×2 output
        assert (rgb[:, :16] == 100).all() and (rgb[:, 16:] == 155).all()
        stats = track.stats()
        assert (stats.width_in, stats.height_in, stats.width_out, stats.height_out) == (
            16,
            16,
            32,
            32,
        )
        # sharpening off: still the output size (the encoder never sees the size change)
        track.view = View(sharpen=False)
        source.push(100, pts=2)
        rgb = (await track.recv()).to_ndarray(format="rgb24")
        assert rgb.shape == (32, 32, 3) and (rgb == 100).all()
        assert track.stats().errors == 0
        track.stop()

    asyncio.run(run())


def test_a_x2_processor_that_returns_the_input_size_is_an_error(executor, caplog) -> None:
    class X2Liar:
        scale = 2

        def process(self, frame: np.ndarray) -> np.ndarray:
            return 255 - frame

    async def run() -> None:
        source = QueueTrack()
        track = SharpenTrack(source, X2Liar(), executor=executor, view=View(split=0.0))
        source.push(70, pts=1)
        rgb = (await track.recv()).to_ndarray(format="rgb24")
        assert rgb.shape == (32, 32, 3) and (rgb == 70).all()  # the plain upscale instead
        assert track.stats().errors == 1
        track.stop()

    asyncio.run(run())
    assert "expected uint8 (32, 32, 3)" in caplog.text


@pytest.mark.parametrize("model", [Broken(), WrongShape()], ids=["raises", "wrong-shape"])
def test_a_failing_model_sends_the_frame_unsharpened(model, executor, caplog) -> None:
    async def run() -> None:
        source = QueueTrack()
        track = SharpenTrack(source, model, executor=executor, view=View(split=0.0))
        source.push(70, pts=1)
        frame = await track.recv()
        assert frame.to_ndarray(format="rgb24")[0, 0, 0] == 70 and frame.pts == 1
        assert track.stats().errors == 1
        track.stop()

    asyncio.run(run())
    assert "the model failed" in caplog.text


def test_end_of_source_ends_the_track_and_its_tasks(executor) -> None:
    async def run() -> None:
        source = QueueTrack()
        track = SharpenTrack(source, GatedInvert(), executor=executor)
        pending = asyncio.ensure_future(track.recv())
        source.end()
        with pytest.raises(MediaStreamError):
            await pending
        assert track.readyState == "ended"
        await asyncio.sleep(0)
        assert {t.get_name() for t in asyncio.all_tasks()} == {asyncio.current_task().get_name()}

    asyncio.run(run())


def test_stop_ends_source_and_wakes_a_waiting_recv(executor) -> None:
    async def run() -> None:
        source = QueueTrack()
        track = SharpenTrack(source, GatedInvert(), executor=executor)
        pending = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.01)
        track.stop()
        with pytest.raises(MediaStreamError):
            await pending
        assert source.readyState == "ended"
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == 1

    asyncio.run(run())


def test_live_source_timestamps_increase_under_a_slow_model(executor) -> None:
    """A 30 fps source and a model slower than the frame interval: the output skips frames
    (counted) but its pts strictly increase in the source's time base."""

    class Slow:
        def process(self, frame: np.ndarray) -> np.ndarray:
            threading.Event().wait(0.06)
            return frame

    async def run() -> None:
        source = ColourTrack(64, 48)
        track = SharpenTrack(source, Slow(), executor=executor)
        frames = [await track.recv() for _ in range(12)]
        pts = [f.pts for f in frames]
        assert all(b > a for a, b in itertools.pairwise(pts)), pts
        assert {f.time_base for f in frames} == {frames[0].time_base}
        assert track.stats().dropped > 0
        track.stop()

    asyncio.run(run())


class Amplify:
    """Doubles every difference from mid-grey: small input changes become larger ones."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        return np.clip(2 * frame.astype(np.int16) - 128, 0, 255).astype(np.uint8)


def test_stabilizer_is_per_track_and_can_be_off(executor) -> None:
    async def level(track: SharpenTrack, source: QueueTrack, value: int, pts: int) -> int:
        pending = asyncio.ensure_future(track.recv())
        source.push(value, pts=pts)
        return int((await pending).to_ndarray(format="rgb24")[8, 8, 0])

    async def run() -> None:
        sources = [QueueTrack() for _ in range(3)]
        one, two, off = (
            SharpenTrack(sources[0], Amplify(), executor=executor, view=View(split=0.0)),
            SharpenTrack(sources[1], Amplify(), executor=executor, view=View(split=0.0)),
            SharpenTrack(
                sources[2], Amplify(), executor=executor, view=View(split=0.0), stabilize=False
            ),
        )
        for t in range(1, 6):  # two still streams, interleaved: neither blends with the other
            assert await level(one, sources[0], 100, t) == 72
            assert await level(two, sources[1], 103, t) == 78
        shimmer = [100 + t % 2 for t in range(6)]  # 1 grey level of noise, doubled by the model
        stable = [await level(one, sources[0], v, 10 + t) for t, v in enumerate(shimmer)]
        bare = [await level(off, sources[2], v, 10 + t) for t, v in enumerate(shimmer)]
        assert bare == [72, 74, 72, 74, 72, 74]
        assert max(np.abs(np.diff(stable[1:]))) < 2  # the still stream's shimmer is damped
        for track in (one, two, off):
            track.stop()

    asyncio.run(run())
