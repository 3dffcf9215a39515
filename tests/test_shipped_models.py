"""Every model shipped in ``models/`` (all modes and tiers, int8 twins too).

Each file has a card naming its SHA-256 and size, and metadata saying what it is (mode,
scale, tier, cost) that its output shape confirms. A restore model must beat the
seed-degraded input on a scene the test draws (no data needed); a x2 model must beat the
bicubic upscale on a real call clip it never saw (when ``../shared`` is there) and stay
near bicubic on drawn graphics, a scene far from its training data; a deblock model must
beat the decoded frames of a real full-size low-rate call clip and of blocked graphics; an
int8 twin loses at most 0.1 dB against its fp32 model.
``test_shipped_model.py`` holds the default model's own, older checks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from sharpcam.engine import Engine
from sharpcam.models import MODE_SCALES, find_models, read_info
from tests.test_shipped_model import drawn_scene
from training.codec import encode_decode
from training.degradations import get_degradation

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
FILES = sorted(MODELS_DIR.glob("*.onnx"))
FP32 = [f for f in FILES if not f.name.endswith(".int8.onnx")]
INT8 = [f for f in FILES if f.name.endswith(".int8.onnx")]
#: The most multiply-adds per output pixel each tier may cost (issue 10: fast ≲ 3k).
BUDGET = {"fast": 3_000, "balanced": 12_000, "quality": 25_000}


def card_of(model: Path) -> Path:
    stem = model.name.removesuffix(".onnx").removesuffix(".int8")
    return MODELS_DIR / ("README.md" if stem == "sharpcam" else f"{stem}.md")


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    mse = np.mean((image.astype(np.float64) - truth.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def gain(path: Path, seed: int) -> float:
    """PSNR gain of the model over what a viewer sees without it, on a drawn scene."""
    info = read_info(path)
    truth = drawn_scene(seed)
    with Engine(path, provider="cpu") as engine:
        if info.scale == 2:  # its job: the half-size frame of a starved call, decoded
            h, w = truth.shape[:2]
            small = cv2.resize(truth, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            small = encode_decode([small] * 4, "h264", 0.1).frames[-1]
            baseline = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
            out = engine.process(small)
        else:
            baseline = get_degradation("seed")(truth)
            out = engine.process(baseline)
    assert out.shape == truth.shape
    return psnr(out, truth) - psnr(baseline, truth)


def test_every_mode_has_a_quality_and_a_fast_tier() -> None:
    for mode in ("restore", "x2", "deblock"):
        assert {"quality", "fast"} <= set(find_models(MODELS_DIR, mode=mode)), mode


def test_each_modes_tiers_cost_less_from_quality_down() -> None:
    """The runtime steps down quality -> balanced -> fast when frames overrun: each step must
    be cheaper (the x2 balanced tier is half the quality ensemble, 7.1k of 14.2k MAC/px)."""
    for mode in ("restore", "x2", "deblock"):
        tiers = find_models(MODELS_DIR, mode=mode)  # in step-down order
        costs = [tiers[t].macs_per_pixel for t in tiers]
        assert all(c is not None for c in costs), mode
        assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs), costs
    assert list(find_models(MODELS_DIR, mode="x2")) == ["quality", "balanced", "fast"]


@pytest.mark.parametrize("model", FILES, ids=lambda p: p.name)
class TestEveryModel:
    def test_card_names_this_file(self, model: Path) -> None:
        card = card_of(model).read_text(encoding="utf-8")
        assert hashlib.sha256(model.read_bytes()).hexdigest() in card, f"{card_of(model)}"
        assert f"{model.stat().st_size:,} bytes" in card

    def test_metadata_matches_the_output(self, model: Path) -> None:
        info = read_info(model)
        assert info.scale == MODE_SCALES[info.mode]
        if info.macs_per_pixel is not None:
            assert info.macs_per_pixel <= BUDGET[info.tier]
        frame = np.random.default_rng(0).integers(0, 256, (45, 67, 3), dtype=np.uint8)
        with Engine(model, provider="cpu") as engine:
            out = engine.process(frame)
        assert out.shape == (45 * info.scale, 67 * info.scale, 3)


RESTORE = [f for f in FP32 if read_info(f).mode == "restore"]
X2 = [f for f in FP32 if read_info(f).mode == "x2"]
DEBLOCK = [f for f in FP32 if read_info(f).mode == "deblock"]


@pytest.mark.parametrize("model", RESTORE, ids=lambda p: p.name)
def test_a_restore_model_beats_the_degraded_input(model: Path) -> None:
    """Measured when shipped (drawn scenes 0 / 1): quality +2.79 / +2.23 dB, fast +1.95 /
    +1.71 dB; an identity model gets +0."""
    assert min(gain(model, 0), gain(model, 1)) > 0.8


@pytest.mark.parametrize("model", X2, ids=lambda p: p.name)
def test_a_x2_model_on_drawn_graphics_stays_near_bicubic(model: Path) -> None:
    """The x2 models are trained on talking-head video and photos; on drawn text and shapes
    they should do no harm. Measured when shipped (2026-12-07), scenes 0 / 1: quality
    +0.02 / +0.02 dB, balanced +0.00 / +0.10, fast +0.01 / -0.02. The files they replaced,
    trained on call frames that the old decode had darkened by a grey level, lost 0.4-0.8 dB
    here (the bound was -1.2 then)."""
    assert min(gain(model, 0), gain(model, 1)) > -0.3


@pytest.mark.parametrize("model", X2, ids=lambda p: p.name)
def test_a_x2_model_beats_bicubic_on_a_call_it_never_saw(model: Path, video_dir: Path) -> None:
    """Its job, on an evaluation clip of the call benchmark (never used in training): the
    half-size frames of a low-rate H.264 call, upscaled. First 12 frames, over bicubic,
    measured when shipped (2026-12-07, retrained on the corrected call cache): quality
    +1.40 dB, balanced +1.63, fast +0.65. The files they replaced scored +0.66 / +1.00 /
    +0.25 here with the unbiased conversions."""
    from training.sequences import read_clip

    frames = read_clip(video_dir / "grid_lwbsza_talkinghead_360x288_25fps.mp4", 12)
    h, w = frames[0].shape[:2]
    small = [cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for f in frames]
    decoded = encode_decode(small, "h264", 0.1).frames
    with Engine(model, provider="cpu") as engine:
        gains = [
            psnr(engine.process(lr), hr)
            - psnr(cv2.resize(lr, (w, h), interpolation=cv2.INTER_CUBIC), hr)
            for lr, hr in zip(decoded, frames, strict=True)
        ]
    assert float(np.mean(gains)) > (0.4 if "fast" in model.name else 1.0)


@pytest.mark.parametrize("model", INT8, ids=lambda p: p.name)
def test_int8_twin_keeps_the_fp32_quality(model: Path) -> None:
    """Loses at most 0.1 dB against its fp32 model on a drawn scene. One-sided: where a
    model's correction is wrong, int8 rounding damps it and the twin may do better (the
    earlier x2 twins lost 0.1-0.25 dB *less* than their models on drawn graphics). The
    export itself refuses a loss above 0.05 dB on the test photos."""
    fp32 = model.with_name(model.name.replace(".int8.onnx", ".onnx"))
    assert gain(model, 0) >= gain(fp32, 0) - 0.1


@pytest.mark.parametrize("model", DEBLOCK, ids=lambda p: p.name)
def test_a_deblock_model_cleans_a_call_it_never_saw(model: Path, video_dir: Path) -> None:
    """Its job, on an evaluation clip of the call benchmark (never used in training): the
    full-size frames of a low-rate H.264 call, decoded. First 12 frames, over the decoded
    frames themselves; measured when shipped (2026-12-07): quality +0.25 dB, fast +0.29. The restore
    models do nothing here (sharpcam.onnx -0.01 dB)."""
    from training.sequences import read_clip

    frames = read_clip(video_dir / "grid_lwbsza_talkinghead_360x288_25fps.mp4", 12)
    decoded = encode_decode(frames, "h264", 0.1).frames
    with Engine(model, provider="cpu") as engine:
        gains = [
            psnr(engine.process(d), f) - psnr(d, f) for d, f in zip(decoded, frames, strict=True)
        ]
    assert float(np.mean(gains)) > 0.15


@pytest.mark.parametrize("model", DEBLOCK, ids=lambda p: p.name)
def test_a_deblock_model_on_drawn_graphics_does_no_harm(model: Path) -> None:
    """Drawn text and shapes, blocked by the same codec at full size; measured when
    shipped (scenes 0 / 1): quality +0.22 / +0.42 dB, fast +0.21 / +0.36."""
    for seed in (0, 1):
        truth = drawn_scene(seed)
        blocked = encode_decode([truth] * 4, "h264", 0.1).frames[-1]
        with Engine(model, provider="cpu") as engine:
            out = engine.process(blocked)
        assert psnr(out, truth) - psnr(blocked, truth) > 0.0
