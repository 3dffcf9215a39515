"""The call family: each step, the pipeline per mode, the named clip degradations, mixes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.synthetic import make_photo
from training.degradations import (
    CLIP_DEGRADATIONS,
    LOW_BPP,
    MixError,
    call_degrade,
    camera_chroma,
    camera_softness,
    codec_degrade,
    codec_round_trip,
    downscale,
    parse_mix,
    player_upscale,
    sensor_noise,
)
from training.sequences import pan_zoom


def sequence(frames: int = 8, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    photo = make_photo(3 * size, 3 * size, seed=seed)
    return pan_zoom(photo, np.random.default_rng(seed), size=size, frames=frames)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


STEPS = {
    "camera_softness": camera_softness,
    "sensor_noise": sensor_noise,
    "downscale": lambda frames, rng: downscale(frames, rng, 1.5),
    "codec_round_trip": codec_round_trip,
}


@pytest.mark.parametrize("name", sorted(STEPS))
class TestSteps:
    def test_uint8_frames_out_of_the_expected_size(self, name: str) -> None:
        frames = sequence()
        out, params = STEPS[name](frames, np.random.default_rng(1))
        assert len(out) == len(frames) and isinstance(params, dict)
        expected = (42, 42) if name == "downscale" else (64, 64)
        assert all(f.dtype == np.uint8 and f.shape == (*expected, 3) for f in out)

    def test_a_seeded_rng_gives_the_same_result(self, name: str) -> None:
        frames = sequence()
        a, pa = STEPS[name](frames, np.random.default_rng(7))
        b, pb = STEPS[name](frames, np.random.default_rng(7))
        assert same(a, b) and pa == pb

    def test_different_draws_happen(self, name: str) -> None:
        frames = sequence()
        params = {str(STEPS[name](frames, np.random.default_rng(s))[1]) for s in range(12)}
        assert len(params) > 1


def test_blur_and_noise_sometimes_change_the_frames() -> None:
    frames = sequence()
    for step in (camera_softness, sensor_noise):
        changed = [not same(step(frames, np.random.default_rng(s))[0], frames) for s in range(16)]
        assert any(changed) and not all(changed)


def test_player_upscale_is_bicubic() -> None:
    small = [make_photo(32, 48)]
    out = player_upscale(small, 64, 96)
    assert np.array_equal(out[0], cv2.resize(small[0], (96, 64), interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("mode", ["restore", "x2"])
def test_call_pipeline_shapes_per_mode(mode: str) -> None:
    frames = sequence(8, 64)
    for s in range(4):
        clip = call_degrade(frames, np.random.default_rng(s), mode)
        assert all(f.shape == (64, 64, 3) for f in clip.full)
        if mode == "x2":
            assert clip.params["factor"] == 2.0
            assert clip.lr is not None and all(f.shape == (32, 32, 3) for f in clip.lr)
            assert clip.model_input(2) is clip.lr
        assert clip.params["codec"] in ("h264", "vp8")
        assert 0.03 <= clip.params["bpp"] <= 0.3  # type: ignore[operator]
        assert not same(clip.full, frames)


def test_call_pipeline_is_deterministic_with_a_seeded_rng() -> None:
    frames = sequence(8, 64)
    a = call_degrade(frames, np.random.default_rng(5), "restore")
    b = call_degrade(frames, np.random.default_rng(5), "restore")
    assert same(a.full, b.full) and a.params == b.params


def test_call_pipeline_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        call_degrade(sequence(), np.random.default_rng(0), "x3")


@pytest.mark.parametrize("name", sorted(CLIP_DEGRADATIONS))
def test_named_clip_degradations(name: str) -> None:
    frames = sequence(10, 192)
    clip = CLIP_DEGRADATIONS[name](frames)
    again = CLIP_DEGRADATIONS[name](frames)
    assert same(clip.full, again.full)
    assert all(f.shape == (192, 192, 3) for f in clip.full)
    assert not same(clip.full, frames)
    if name == "blocking":
        assert clip.lr is None
        with pytest.raises(ValueError, match="no x2 input"):
            clip.model_input(2)
    else:
        assert clip.lr is not None and all(f.shape == (96, 96, 3) for f in clip.lr)
        up = player_upscale(clip.lr, 192, 192)
        assert same(up, clip.full)  # restore input = the LR frames, bicubic x2
    if name != "seed":
        assert clip.params["real_bpp"] == pytest.approx(LOW_BPP, rel=0.2)


class TestMix:
    def test_weights_are_normalised_and_printed(self) -> None:
        mix = parse_mix("call:0.8,seed:0.2")
        assert mix.names == ("call", "seed")
        assert mix.share("call") == pytest.approx(0.8) and mix.share("seed") == pytest.approx(0.2)
        assert str(mix) == "call:0.8,seed:0.2"
        assert parse_mix("call:4, seed:1").share("call") == pytest.approx(0.8)
        assert [p.sequence for p in mix.parts] == [True, False]

    def test_a_bare_name_is_all_of_it(self) -> None:
        mix = parse_mix("seed")
        assert mix.share("seed") == 1.0 and str(mix) == "seed:1"

    def test_choose_follows_the_shares(self) -> None:
        mix = parse_mix("call:0.8,seed:0.2")
        rng = np.random.default_rng(0)
        picks = [mix.choose(rng) for _ in range(2000)]
        assert picks.count("call") / 2000 == pytest.approx(0.8, abs=0.04)

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("", "empty"),
            ("blur:1", "unknown degradation 'blur'"),
            ("call:x", "not a number"),
            ("call:0,seed:1", "positive"),
            ("call:-1", "positive"),
            ("call:nan", "positive"),
            ("seed:1,seed:2", "twice"),
        ],
    )
    def test_bad_mixes_are_one_line_errors(self, text: str, match: str) -> None:
        with pytest.raises(MixError, match=match) as info:
            parse_mix(text)
        assert "\n" not in str(info.value)


class TestCodecAlone:
    def test_full_size_and_only_the_codec(self) -> None:
        frames = pan_zoom(make_photo(160, 160, seed=3), np.random.default_rng(0), size=64, frames=4)
        clip = codec_degrade(frames, np.random.default_rng(1), "restore")
        assert clip.lr is None and clip.full[0].shape == (64, 64, 3)
        assert set(clip.params) == {"mode", "factor", "codec", "bpp", "real_bpp"}
        assert not np.array_equal(clip.full[0], frames[0])

    def test_no_x2_form(self) -> None:
        frames = [np.zeros((32, 32, 3), np.uint8)] * 2
        with pytest.raises(ValueError, match="no x2 form"):
            codec_degrade(frames, np.random.default_rng(0), "x2")


def test_camera_chroma_keeps_luma_and_brightness() -> None:
    """4:2:0 takes colour resolution only: luma stays (within the 8-bit rounding) and the
    picture gets no darker (saturated colours averaged and clipped back into range may move
    the mean a little, here +0.37; swscale's default path moved it by -1)."""
    photo = make_photo(64, 96, seed=4)
    (camera,) = camera_chroma([photo])
    luma = np.array([0.299, 0.587, 0.114])
    assert np.abs(camera @ luma - photo @ luma).mean() < 1.0
    assert abs(float(camera.mean()) - float(photo.mean())) < 0.5
