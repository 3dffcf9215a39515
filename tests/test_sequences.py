"""Pan/zoom sequences over photos, clip reading, and the evaluation/training clip split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers_media import make_clip
from tests.synthetic import make_photo
from training.sequences import (
    EVALUATION_CLIPS,
    TRAINING_CLIPS,
    clip_role,
    clip_window,
    pan_zoom,
    read_clip,
)

SHARED_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"


class TestPanZoom:
    def test_frames_have_the_size_and_move(self) -> None:
        photo = make_photo(300, 400)
        frames = pan_zoom(photo, np.random.default_rng(0), size=96, frames=12)
        assert len(frames) == 12
        assert all(f.shape == (96, 96, 3) and f.dtype == np.uint8 for f in frames)
        assert not np.array_equal(frames[0], frames[-1])

    def test_a_seeded_rng_gives_the_same_sequence(self) -> None:
        photo = make_photo(300, 400)
        a = pan_zoom(photo, np.random.default_rng(3), size=64, frames=8)
        b = pan_zoom(photo, np.random.default_rng(3), size=64, frames=8)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    def test_a_photo_barely_larger_than_the_window_still_works(self) -> None:
        frames = pan_zoom(make_photo(64, 80), np.random.default_rng(1), size=64, frames=8)
        assert all(f.shape == (64, 64, 3) for f in frames)

    def test_a_photo_smaller_than_the_window_is_refused(self) -> None:
        with pytest.raises(ValueError, match="too small"):
            pan_zoom(make_photo(48, 200), np.random.default_rng(0), size=64, frames=8)


def test_clip_window_takes_consecutive_frames() -> None:
    clip = [np.full((40, 50, 3), t, np.uint8) for t in range(20)]
    frames = clip_window(clip, np.random.default_rng(0), size=32, frames=8)
    values = [int(f[0, 0, 0]) for f in frames]
    assert values == list(range(values[0], values[0] + 8))
    assert all(f.shape == (32, 32, 3) for f in frames)


def test_read_clip_decodes_and_crops_to_a_multiple_of_8(tmp_path: Path) -> None:
    frames = make_clip(tmp_path / "c.mp4", frames=4, width=90, height=70)
    clip = read_clip(tmp_path / "c.mp4")
    assert len(clip) == 4 and clip[0].shape == (64, 88, 3)
    assert np.abs(clip[0].astype(int) - frames[0][:64, :88]).mean() < 8
    assert len(read_clip(tmp_path / "c.mp4", max_frames=2)) == 2


def test_read_clip_refuses_a_non_video(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode"):
        read_clip(tmp_path / "x.mp4")


def test_evaluation_and_training_clips_are_disjoint() -> None:
    assert not set(EVALUATION_CLIPS) & set(TRAINING_CLIPS)
    assert clip_role("x/grid_lwbsza_talkinghead_360x288_25fps.mp4") == "evaluation"
    assert clip_role("grid_lrwp9a_talkinghead_360x288_25fps.mp4") == "training"
    assert clip_role("mine.mp4") == "unknown"


@pytest.mark.skipif(not SHARED_VIDEO.is_dir(), reason="../shared/data/video is absent")
def test_every_shared_clip_has_a_role() -> None:
    clips = sorted(SHARED_VIDEO.glob("*.mp4"))
    assert clips and all(clip_role(c) != "unknown" for c in clips)
    assert sum(clip_role(c) == "evaluation" for c in clips) == len(EVALUATION_CLIPS)
