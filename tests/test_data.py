"""Data preparation: the ÷8 filter, the seed-42 split, the patch rule, the manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import write_photo, write_photos
from training.data import (
    DataError,
    PatchSet,
    Split,
    make_split,
    patch_origins,
    scan_folder,
    train_test_indices,
)


class TestSplit:
    def test_matches_scikit_learn_train_test_split(self) -> None:
        # Values printed by sklearn.model_selection.train_test_split(list(range(n)),
        # test_size=0.2, random_state=42) (scikit-learn 1.x); it is not a dependency.
        train, test = train_test_indices(10, 0.2, 42)
        assert train == [5, 0, 7, 2, 9, 4, 3, 6]
        assert test == [8, 1]
        train, test = train_test_indices(137, 0.2, 42)
        assert train[:8] == [10, 130, 51, 11, 114, 76, 98, 117]
        assert test[:8] == [105, 104, 12, 26, 123, 66, 64, 115]
        assert (len(train), len(test)) == (109, 28)
        assert sorted(train + test) == list(range(137))

    def test_deterministic_and_disjoint(self, tmp_path: Path) -> None:
        write_photos(tmp_path, 11)
        first, second = make_split(tmp_path), make_split(tmp_path)
        assert first == second
        a, b, test = set(first.train_a), set(first.train_b), set(first.test)
        assert not (a & b) and not (a & test) and not (b & test)
        assert len(a | b | test) == 11
        assert len(first.test) == 3  # ceil(0.2 * 11)
        assert len(first.train_a) == 4 and len(first.train_b) == 4  # halves of 8
        assert set(first.showcase) <= test

    def test_showcase_is_capped(self, tmp_path: Path) -> None:
        write_photos(tmp_path, 10)
        assert len(make_split(tmp_path, showcase=1).showcase) == 1
        assert len(make_split(tmp_path, showcase=50).showcase) == 2

    def test_manifest_round_trip_and_verify(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        write_photos(data, 6)
        split = make_split(data)
        split.save(tmp_path / "split.json")
        loaded = Split.load(tmp_path / "split.json")
        assert loaded == split
        loaded.verify(data)
        write_photo(data / split.test[0], 96, 128, seed=99)  # content changes
        with pytest.raises(DataError, match="changed since the split"):
            loaded.verify(data)


class TestScan:
    def test_drops_sides_not_divisible_by_8(self, tmp_path: Path) -> None:
        write_photo(tmp_path / "good.png", 64, 80)
        write_photo(tmp_path / "odd.png", 60, 80)
        scan = scan_folder(tmp_path)
        assert [r.name for r in scan.kept] == ["good.png"]
        assert scan.dropped == (("odd.png", "80x60 not divisible by 8"),)

    def test_unreadable_file_warns_once_and_is_skipped(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        write_photo(tmp_path / "good.png", 64, 64)
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
        with caplog.at_level(logging.WARNING):
            scan = scan_folder(tmp_path)
        assert [r.name for r in scan.kept] == ["good.png"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["skipping broken.jpg: the file cannot be decoded as an image"]

    @pytest.mark.parametrize(
        ("setup", "message"),
        [
            (lambda p: None, "does not exist"),
            (lambda p: p.mkdir(), "holds no images"),
            (lambda p: (p.mkdir(), write_photo(p / "x.png", 60, 60)), "no usable image"),
        ],
    )
    def test_bad_folders(self, tmp_path: Path, setup, message: str) -> None:
        folder = tmp_path / "photos"
        setup(folder)
        with pytest.raises(DataError, match=message) as info:
            scan_folder(folder)
        assert "\n" not in str(info.value)


class TestPatches:
    @pytest.mark.parametrize(
        ("h", "w", "expected"),
        [(256, 256, 1), (512, 768, 6), (1080, 1920, 28), (255, 1024, 0), (600, 300, 2)],
    )
    def test_count_follows_the_loop(self, h: int, w: int, expected: int) -> None:
        origins = patch_origins(h, w, 256, 256)
        assert (
            len(origins)
            == expected
            == (((h - 256) // 256 + 1) * ((w - 256) // 256 + 1) if h >= 256 and w >= 256 else 0)
        )
        assert all(y + 256 <= h and x + 256 <= w for y, x in origins)

    def test_non_overlapping_cuts(self, tmp_path: Path) -> None:
        write_photo(tmp_path / "a.png", 64, 96)
        patches = PatchSet(tmp_path, ["a.png"], {}, size=32, stride=32)
        assert len(patches) == 6
        assert {(p.y, p.x) for p in patches.patches} == {
            (y, x) for y in (0, 32) for x in (0, 32, 64)
        }
        whole = np.concatenate(
            [np.concatenate([patches[r * 3 + c] for c in range(3)], axis=1) for r in range(2)]
        )
        assert np.array_equal(whole, patches.images[0])
        assert len({p.key for p in patches.patches}) == 6

    def test_limit_is_deterministic(self, tmp_path: Path) -> None:
        write_photos(tmp_path, 3, 64, 64)
        names = ["photo_00.png", "photo_01.png", "photo_02.png"]
        a = PatchSet(tmp_path, names, {}, size=16, stride=16, limit=7)
        b = PatchSet(tmp_path, names, {}, size=16, stride=16, limit=7)
        assert len(a) == 7 and [p.key for p in a.patches] == [p.key for p in b.patches]
