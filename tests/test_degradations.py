"""Degradations: the seed formula, the registry, the type checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.synthetic import make_photo
from training.degradations import DEGRADATIONS, get_degradation, register_degradation


def test_seed_equals_the_opencv_formula() -> None:
    image = make_photo(64, 96)
    small = cv2.resize(image, (48, 32), interpolation=cv2.INTER_LINEAR)
    expected = cv2.resize(small, (96, 64), interpolation=cv2.INTER_CUBIC)
    out = get_degradation("seed")(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, image)


def test_seed_is_deterministic_whatever_the_rng() -> None:
    image = make_photo(32, 32)
    seed = get_degradation("seed")
    assert seed.deterministic
    assert np.array_equal(
        seed(image, np.random.default_rng(1)), seed(image, np.random.default_rng(2))
    )


def test_unknown_name_lists_the_known() -> None:
    with pytest.raises(KeyError, match=r"choose one of .*seed"):
        get_degradation("nope")


def test_registry_accepts_new_entries_and_refuses_duplicates() -> None:
    @register_degradation("test-invert", deterministic=True, description="invert")
    def invert(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return 255 - image

    try:
        image = make_photo(16, 16)
        assert np.array_equal(get_degradation("test-invert")(image), 255 - image)
        with pytest.raises(ValueError, match="already registered"):
            register_degradation("test-invert", deterministic=True, description="")(invert)
    finally:
        DEGRADATIONS.pop("test-invert")


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((8, 8, 3), np.float32), TypeError),
        (np.zeros((8, 8), np.uint8), ValueError),
        (np.zeros((8, 8, 4), np.uint8), ValueError),
    ],
)
def test_bad_images_are_refused(image: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        get_degradation("seed")(image)
