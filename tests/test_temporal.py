"""The temporal stabilizer (``sharpcam/temporal.py``) on real ONNX models run by the real
engine: less flicker on a still, noisy scene, no ghost behind a moving square, pass-through
on restarts, ×2 outputs; and the switch reaching the pipeline from the command line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_media import make_clip
from helpers_models import nearest_x2_model, unsharp_model
from synthetic import make_photo

from sharpcam import cli, pipeline
from sharpcam.engine import Engine
from sharpcam.temporal import SETTINGS_BY_SCALE, Stabilizer, StabilizerSettings
from training.metrics import flicker


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = unsharp_model(tmp_path_factory.mktemp("m") / "unsharp.onnx", amount=0.3)
    return Engine(path, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def engine_x2(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = nearest_x2_model(tmp_path_factory.mktemp("m") / "x2.onnx")
    return Engine(path, provider="cpu", threads=1, upscale=2)


def noisy_still(height: int, width: int, frames: int) -> tuple[list, list]:
    """A still scene (the truth, every frame) and its copies with fresh noise (sigma 2)."""
    scene = make_photo(height, width, seed=3)
    rng = np.random.default_rng(0)
    noisy = [
        np.clip(scene + rng.normal(0, 2.0, scene.shape), 0, 255).astype(np.uint8)
        for _ in range(frames)
    ]
    return [scene] * frames, noisy


def moving_square(t: int, height: int = 64, width: int = 96) -> np.ndarray:
    """A bright 16-pixel square on grey, 4 px further right at each frame ``t``."""
    frame = np.full((height, width, 3), 60, np.uint8)
    frame[24:40, 8 + 4 * t : 24 + 4 * t] = 220
    return frame


def stabilized(frames: list, outputs: list, **settings: float) -> list:
    stab = Stabilizer(StabilizerSettings(**settings) if settings else None)
    return [stab(f, o) for f, o in zip(frames, outputs, strict=True)]


def test_still_noisy_scene_flickers_less_than_its_input(engine: Engine) -> None:
    truth, noisy = noisy_still(64, 96, 12)
    bare = [engine.process(f) for f in noisy]
    stable = stabilized(noisy, bare)
    base = flicker(noisy, truth)
    bare_ratio, stable_ratio = flicker(bare, truth) / base, flicker(stable, truth) / base
    assert bare_ratio > 1.05  # the sharpener amplifies the noise: it flickers
    assert stable_ratio < bare_ratio and stable_ratio <= 1.00


def test_moving_square_leaves_no_ghost(engine: Engine) -> None:
    frames = [moving_square(t) for t in range(12)]
    bare = [engine.process(f) for f in frames]
    stable = stabilized(frames, bare)
    for t in range(1, 12):  # where the square is and where it just was: the model's own output
        region = (slice(22, 42), slice(4 + 4 * (t - 1), 28 + 4 * t))
        diff = np.abs(stable[t][region].astype(int) - bare[t][region])
        assert diff.max() <= 1, t


def test_first_frame_size_change_and_cut_pass_through(engine: Engine) -> None:
    _, noisy = noisy_still(64, 96, 3)
    stab = Stabilizer()
    first = engine.process(noisy[0])
    assert stab(noisy[0], first) is first
    second = engine.process(noisy[1])
    assert not np.array_equal(stab(noisy[1], second), second)  # blended from now on
    small = noisy[2][:48, :80].copy()
    out = engine.process(small)
    assert stab(small, out) is out  # a new size starts over
    cut = 255 - small
    out = engine.process(cut)
    assert stab(cut, out) is out  # a scene cut starts over
    assert stab.resets == 2


def test_x2_outputs(engine_x2: Engine) -> None:
    truth, noisy = noisy_still(32, 48, 10)
    bare = [engine_x2.process(f) for f in noisy]
    assert bare[0].shape == (64, 96, 3)
    stable = stabilized(noisy, bare)
    assert stable[3].shape == (64, 96, 3) and stable[0] is bare[0]
    big_truth = [engine_x2.process(g) for g in truth]
    # a x2 model's stabilizer passes the input's own change (the receiver's decoded frame
    # is what it is) and smooths what the model adds: below the bare model and below what
    # the receiver sees without sharpcam (bicubic)
    bicubic = [cv2.resize(f, (96, 64), interpolation=cv2.INTER_CUBIC) for f in noisy]
    ceiling = min(0.75 * flicker(bare, big_truth), flicker(bicubic, big_truth))
    assert flicker(stable, big_truth) < ceiling
    frames = [moving_square(t, 32, 80)[:, :, :] for t in range(8)]
    bare = [engine_x2.process(f) for f in frames]
    stable = stabilized(frames, bare)
    for t in range(1, 8):
        region = (slice(44, 84), slice(2 * (4 + 4 * (t - 1)), 2 * (28 + 4 * t)))
        assert np.abs(stable[t][region].astype(int) - bare[t][region]).max() <= 1, t


def test_defaults_follow_the_scale(engine: Engine, engine_x2: Engine) -> None:
    _, noisy = noisy_still(32, 48, 3)
    stab = Stabilizer()
    stab(noisy[0], engine.process(noisy[0]))
    assert stab.settings == SETTINGS_BY_SCALE[1] == StabilizerSettings()
    stab(noisy[1], engine_x2.process(noisy[1]))  # another output size: starts over, as x2
    assert stab.settings == SETTINGS_BY_SCALE[2] and stab.settings.follow == 1.0
    assert Stabilizer(StabilizerSettings(beta=0.5)).settings.beta == 0.5


def test_smooth_change_passes_in_full(engine: Engine) -> None:
    """A slow, smooth brightening of a still scene is followed at once, not lagged."""
    scene = make_photo(48, 64, seed=5)
    frames = [cv2.add(scene, np.full_like(scene, 3 * t)) for t in range(8)]  # +3 levels a frame
    stab = Stabilizer(StabilizerSettings(follow=0.0, smooth=3))
    out = [stab(f, f) for f in frames]  # an identity model: the output is the input
    inner = (slice(4, -4), slice(4, -4))
    assert all(
        np.abs(o[inner].astype(int) - f[inner]).max() <= 1 for o, f in zip(out, frames, strict=True)
    )


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="beta"):
        StabilizerSettings(beta=1.0)
    with pytest.raises(ValueError, match="still < moving"):
        StabilizerSettings(still=10, moving=5)
    with pytest.raises(ValueError, match="smooth"):
        StabilizerSettings(smooth=4)


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-stabilize"], False)])
def test_no_stabilize_reaches_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: bool
) -> None:
    clip = tmp_path / "call.mp4"
    make_clip(clip, frames=4, width=64, height=48)
    model = unsharp_model(tmp_path / "unsharp.onnx")
    seen: list[pipeline.RunSettings] = []
    real_run = pipeline.run

    def spy(*args: object, **kwargs: object) -> pipeline.RunStats:
        seen.append(args[3])  # type: ignore[arg-type]
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run", spy)
    out = tmp_path / "sharp.mp4"
    argv = ["--input", str(clip), "--output", str(out), "--model", str(model), "--no-progress"]
    assert cli.main([*argv, *flag]) == 0
    assert [s.stabilize for s in seen] == [expected]
    assert out.stat().st_size > 0


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("smooth", [0, 3, 5])
@pytest.mark.parametrize("height", [1, 47, 100])
def test_bands_give_the_whole_frame_blend(
    monkeypatch: pytest.MonkeyPatch, smooth: int, height: int, scale: int
) -> None:
    """The blend runs in bands of rows (cache-sized); the numbers are those of one pass over
    the whole frame, band edges, the blur's halo and the x2 enlargement included."""
    rng = np.random.default_rng(height + smooth + scale)
    scene = make_photo(max(height, 8), 40, seed=2)[:height]
    frames = [cv2.add(scene, rng.integers(0, 4, scene.shape, np.uint8)) for _ in range(5)]
    size = (40 * scale, height * scale)
    big = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames]
    outputs = [cv2.add(b, rng.integers(0, 6, b.shape, np.uint8)) for b in big]

    def run(band_rows: int) -> list[np.ndarray]:
        monkeypatch.setattr("sharpcam.temporal._BAND_ROWS", band_rows)
        stab = Stabilizer(StabilizerSettings(smooth=smooth))
        return [stab(f, o).copy() for f, o in zip(frames, outputs, strict=True)]

    whole = run(10**6)
    for band_rows in (7, 48):
        assert all(np.array_equal(a, b) for a, b in zip(run(band_rows), whole, strict=True))
    assert not np.array_equal(whole[-1], outputs[-1])  # it did blend
