"""The encoded-sequence cache: built once, reused, rebuilt when its key changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import make_photo
from training.callcache import CacheSpec, CallCache, Source

SPEC = CacheSpec(mode="restore", size=64, min_frames=4, max_frames=6, per_source=2, seed=1)


def sources(n: int = 2) -> list[Source]:
    return [
        Source(f"p{i}.png", f"{i:02d}" * 32, lambda i=i: make_photo(160, 200, seed=i))
        for i in range(n)
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


class TestFill:
    def test_builds_then_reuses(self, tmp_path: Path) -> None:
        cache = CallCache(tmp_path, SPEC)
        first = cache.fill(sources(), progress=False)
        assert (first.built, first.reused, first.sources_built) == (4, 0, 2)
        assert first.seconds_per_source > 0
        before = snapshot(tmp_path)
        second = cache.fill(sources(), progress=False)
        assert (second.built, second.reused) == (0, 4)
        assert snapshot(tmp_path) == before

    def test_same_key_same_content(self, tmp_path: Path) -> None:
        CallCache(tmp_path / "a", SPEC).fill(sources(), progress=False)
        CallCache(tmp_path / "b", SPEC).fill(sources()[::-1], progress=False)
        assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")

    def test_key_file_holds_the_key_and_the_draws(self, tmp_path: Path) -> None:
        cache = CallCache(tmp_path, SPEC)
        cache.fill(sources(1), progress=False)
        record = json.loads((cache.entry("00" * 32, 0) / "key.json").read_text())
        assert record["key"] == SPEC.key("00" * 32, 0)
        assert record["key"]["sha256"] == "00" * 32 and record["key"]["seed"] == 1
        assert record["params"]["codec"] in ("h264", "vp8")

    @pytest.mark.parametrize(
        "changed",
        [
            CacheSpec(mode="restore", size=64, min_frames=4, max_frames=6, per_source=2, seed=2),
            CacheSpec(mode="restore", size=64, min_frames=5, max_frames=6, per_source=2, seed=1),
        ],
    )
    def test_a_changed_key_rebuilds(self, tmp_path: Path, changed: CacheSpec) -> None:
        CallCache(tmp_path, SPEC).fill(sources(), progress=False)
        summary = CallCache(tmp_path, changed).fill(sources(), progress=False)
        assert (summary.built, summary.reused) == (4, 0)

    def test_a_changed_version_rebuilds(self, tmp_path: Path, monkeypatch) -> None:
        CallCache(tmp_path, SPEC).fill(sources(), progress=False)
        monkeypatch.setattr("training.callcache.CALL_VERSION", 999)
        assert CallCache(tmp_path, SPEC).fill(sources(), progress=False).built == 4

    def test_a_damaged_entry_is_rebuilt_not_trusted(self, tmp_path: Path) -> None:
        cache = CallCache(tmp_path, SPEC)
        cache.fill(sources(1), progress=False)
        (cache.entry("00" * 32, 0) / "degraded.npy").write_bytes(b"junk")
        (cache.entry("00" * 32, 1) / "key.json").write_text("{")
        summary = cache.fill(sources(1), progress=False)
        assert (summary.built, summary.reused) == (2, 0)
        assert cache.valid("00" * 32, 0) and cache.valid("00" * 32, 1)

    def test_a_new_image_gets_its_own_entries(self, tmp_path: Path) -> None:
        CallCache(tmp_path, SPEC).fill(sources(1), progress=False)
        summary = CallCache(tmp_path, SPEC).fill(sources(2), progress=False)
        assert (summary.built, summary.reused) == (2, 2)

    def test_sources_are_only_loaded_when_needed(self, tmp_path: Path) -> None:
        CallCache(tmp_path, SPEC).fill(sources(), progress=False)

        def fail() -> np.ndarray:
            raise AssertionError("loaded although cached")

        CallCache(tmp_path, SPEC).fill([Source("p0.png", "00" * 32, fail)], progress=False)


@pytest.mark.parametrize(("mode", "side"), [("restore", 64), ("x2", 32)])
def test_pairs_serve_degraded_and_pristine_frames(tmp_path: Path, mode: str, side: int) -> None:
    spec = CacheSpec(mode=mode, size=64, min_frames=4, max_frames=6, per_source=2, seed=1)
    cache = CallCache(tmp_path, spec)
    cache.fill(sources(), progress=False)
    pairs = cache.pairs(sources())
    assert 16 <= len(pairs) <= 24
    degraded, pristine = pairs.pair(0)
    assert degraded.shape == (side, side, 3) and pristine.shape == (64, 64, 3)
    assert degraded.dtype == pristine.dtype == np.uint8
    assert pairs.previous(0) is None
    consecutive = pairs.consecutive()
    assert len(consecutive) == len(pairs) - 4
    i = consecutive[0]
    prev = pairs.previous(i)
    assert prev is not None and np.array_equal(prev[1], pairs.pair(i - 1)[1])


def test_pairs_refuse_an_unfilled_cache(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="fill the cache first"):
        CallCache(tmp_path, SPEC).pairs(sources(1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "x3"}, "unknown mode"),
        ({"mode": "x2", "size": 66}, "multiple of 4"),
        ({"min_frames": 1}, "sequence length"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CacheSpec(**kwargs)


def test_training_clips_can_be_sources(tmp_path: Path) -> None:
    clip = [make_photo(80, 96, seed=t % 3) for t in range(12)]
    source = Source("clip.mp4", "ab" * 32, lambda: clip, kind="clip")
    cache = CallCache(tmp_path, SPEC)
    cache.fill([source], progress=False)
    assert len(cache.pairs([source])) >= 8


class TestCodecAndCameraColour:
    def test_codec_entries_are_full_size_codec_only(self, tmp_path: Path) -> None:
        spec = CacheSpec(mode="restore", size=64, min_frames=4, max_frames=4, degradation="codec")
        cache = CallCache(tmp_path, spec)
        cache.fill(sources(1), progress=False)
        record = json.loads((cache.entry("00" * 32, 0) / "key.json").read_text())
        assert record["key"]["degradation"] == "codec"
        assert set(record["params"]) == {"mode", "factor", "codec", "bpp", "real_bpp"}
        degraded = np.load(cache.entry("00" * 32, 0) / "degraded.npy")
        assert degraded.shape == (4, 64, 64, 3)

    def test_call_and_codec_keys_differ(self, tmp_path: Path) -> None:
        CallCache(tmp_path, SPEC).fill(sources(1), progress=False)
        codec = CacheSpec(**{**SPEC.__dict__, "degradation": "codec"})
        assert CallCache(tmp_path, codec).fill(sources(1), progress=False).built == 2

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"degradation": "blur"}, "unknown sequence degradation"),
            ({"degradation": "codec", "mode": "x2"}, "restore mode only"),
        ],
    )
    def test_bad_specs(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CacheSpec(**kwargs)

    def test_photo_sequences_get_a_cameras_4_2_0_colour(self, tmp_path: Path) -> None:
        """One-pixel red/green stripes (full-resolution colour) cannot survive 4:2:0: the
        pristine frames of a photo's sequence are what a camera would deliver."""
        stripes = np.zeros((64, 64, 3), np.uint8)  # the sequence's size: no zoom, no blur
        stripes[:, 0::2] = (200, 40, 40)
        stripes[:, 1::2] = (40, 200, 40)
        source = Source("s.png", "ab" * 32, lambda: stripes)
        spec = CacheSpec(mode="restore", size=64, min_frames=2, max_frames=2, per_source=1)
        cache = CallCache(tmp_path, spec)
        cache.fill([source], progress=False)
        pristine = np.load(cache.entry("ab" * 32, 0) / "pristine.npy").astype(np.float64)
        stripe_contrast = np.abs(np.diff(pristine[..., 0], axis=2)).mean()
        assert stripe_contrast < 80  # 160 in the photo; luma keeps a little of it
