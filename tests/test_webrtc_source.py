"""SourceTrack: a real video file (written here with PyAV) read through sharpcam.sources
into aiortc frames: paced, looping, increasing timestamps, clean stop."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("conftest_browser")

from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError  # noqa: E402
from conftest_browser import COLOUR, QueueTrack, wait_until, write_clip  # noqa: E402

from sharpcam.errors import SourceError  # noqa: E402
from sharpcam.sources import open_source  # noqa: E402
from sharpcam.webrtc.source import Fanout, SourceTrack, open_source_track  # noqa: E402


def source_threads() -> int:
    return sum(t.name.startswith("sharpcam-source") for t in threading.enumerate())


def test_a_file_plays_on_repeat_with_increasing_pts(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=6, fps=25)
    track = open_source_track(str(clip))
    assert track.info.live is False and float(track.info.fps) == 25

    async def run() -> list:
        return [await track.recv() for _ in range(14)]  # more than two passes of the file

    frames = asyncio.run(run())
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    assert pts[:3] == [0, 3600, 7200]  # 25 fps in the 90 kHz clock
    assert {f.time_base for f in frames} == {VIDEO_TIME_BASE}
    image = frames[-1].to_ndarray(format="rgb24")
    assert image.shape == (240, 320, 3)
    assert np.abs(image.reshape(-1, 3).mean(0) - COLOUR).max() < 8
    track.close()
    assert source_threads() == 0


def test_without_repeat_the_track_ends_with_the_file(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=3)

    async def run() -> int:
        track = SourceTrack(lambda: open_source(input=clip), repeat=False)
        n = 0
        with pytest.raises(MediaStreamError):
            while True:
                await track.recv()
                n += 1
        assert track.readyState == "ended"
        track.close()
        return n

    assert asyncio.run(run()) == 3


def test_stop_ends_recv_and_the_worker_thread(tmp_path: Path) -> None:
    track = open_source_track(str(write_clip(tmp_path / "clip.mp4", frames=3)))

    async def run() -> None:
        await track.recv()
        track.stop()
        with pytest.raises(MediaStreamError):
            await track.recv()

    asyncio.run(run())
    track.close()
    assert source_threads() == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [("missing.mp4", "--source missing.mp4: no such video file"), ("7", "camera 7 did not open")],
)
def test_a_source_that_cannot_open_is_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        open_source_track(spec)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_video_is_a_source_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    with pytest.raises(SourceError, match=r"notes\.mp4"):
        open_source_track(str(bogus))


def test_fanout_shares_one_read_and_stops_reading_without_subscribers() -> None:
    async def run() -> None:
        source = QueueTrack()
        fanout = Fanout(source)
        a, b = fanout.subscribe(), fanout.subscribe()
        assert not fanout.reading  # nothing is read before someone asks
        pending = asyncio.ensure_future(a.recv())
        source.push(1, pts=1)
        assert (await pending).pts == 1
        assert (await b.recv()).pts == 1  # one read, both subscribers
        source.push(2, pts=2)
        source.push(3, pts=3)
        await wait_until(lambda: source.queue.empty(), "the fan-out to read both frames")
        assert (await a.recv()).pts == 3 and (await b.recv()).pts == 3  # newest only
        a.stop()
        assert fanout.reading  # b still subscribed
        b.stop()
        assert not fanout.reading and source.readyState == "live"  # not owned
        c = fanout.subscribe()
        pending = asyncio.ensure_future(c.recv())
        source.end()
        with pytest.raises(MediaStreamError):
            await pending
        await fanout.close()
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == 1

    asyncio.run(run())
