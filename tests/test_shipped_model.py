"""The shipped default model: its contract, its metadata, its card, and a real photo.

The model card (``models/README.md``) must describe the file actually shipped: same
SHA-256, same test figures as the ONNX metadata, the loss terms that were switched off. On
a held-out photo of the seed-42 split (when ``../shared`` is present) the runtime's engine
must sharpen: closer to the ground truth than the degraded input.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from sharpcam.contract import default_model_path
from sharpcam.engine import Engine
from training.data import make_split, read_rgb
from training.degradations import get_degradation

MODEL = default_model_path()
CARD = MODEL.parent / "README.md"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(MODEL, provider="cpu")


def test_the_default_model_is_the_shipped_file() -> None:
    assert MODEL.name == "sharpcam.onnx" and MODEL.parent.name == "models"
    assert MODEL.is_file(), "models/sharpcam.onnx is missing from the checkout"


def test_it_meets_the_runtime_contract(engine: Engine) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (404, 720, 3), dtype=np.uint8)
    out = engine.process(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8


def test_metadata_names_recipe_data_loss_and_figures(engine: Engine) -> None:
    meta = engine.metadata
    for key in ("sharpcam.recipe", "sharpcam.data", "sharpcam.loss", "sharpcam.test"):
        assert meta.get(key), f"metadata {key} is missing"
    assert meta["sharpcam.students"] == "2"
    assert "teacher" in meta["sharpcam.loss_off"] and "perceptual" in meta["sharpcam.loss_off"]


def test_card_describes_this_file(engine: Engine) -> None:
    card = CARD.read_text(encoding="utf-8")
    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert digest in card, "models/README.md names another file: update its sha256"
    assert f"{MODEL.stat().st_size:,} bytes" in card
    # The ensemble's test figures in the metadata are the ones the card prints.
    found = re.search(
        r"ensemble PSNR ([\d.]+) dB \(([+-][\d.]+)\) SSIM ([\d.]+) \(([+-][\d.]+)\)",
        engine.metadata["sharpcam.test"],
    )
    assert found is not None
    psnr, gain, ssim, ssim_gain = found.groups()
    row = next(line for line in card.splitlines() if "this file" in line and "|" in line)
    for figure in (psnr, gain, ssim, ssim_gain):
        assert figure in row
    assert "--no-teacher --no-perceptual" in card


def test_it_beats_the_degraded_input_on_a_held_out_photo(engine: Engine, photos_dir: Path) -> None:
    split = make_split(photos_dir)
    truth = read_rgb(photos_dir / split.test[0])
    assert truth is not None
    degraded = get_degradation("seed")(truth)
    sharpened = engine.process(degraded)

    def psnr(image: np.ndarray) -> float:
        mse = np.mean((image.astype(np.float64) - truth) ** 2)
        return float(10 * np.log10(255.0**2 / mse))

    assert psnr(sharpened) > psnr(degraded) + 0.3
