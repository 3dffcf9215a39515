"""YUV <-> RGB conversions: unbiased against the colour matrix, and every tagged stream works.

swscale's default path (PyAV's plain ``to_ndarray(format="rgb24")``) decodes 4:2:0 about one
grey level too dark; :data:`sharpcam.frames.SWS_FLAGS` is what every conversion of the
runtime and of the codec benchmark uses instead.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from sharpcam.frames import rgb_from_video_frame, video_frame_from_rgb
from sharpcam.sinks import FileSink
from sharpcam.sources import Frame
from training.codec import encode_decode


def smooth_planes(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Limited-range Y, U, V planes (4:2:0) of smooth random content, inside the RGB gamut."""
    rng = np.random.default_rng(seed)

    def plane(h: int, w: int, lo: float, hi: float) -> np.ndarray:
        coarse = rng.uniform(lo, hi, (h // 8 + 2, w // 8 + 2)).astype(np.float32)
        return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).round().astype(np.uint8)

    return plane(height, width, 60, 190), *(
        plane(height // 2, width // 2, 112, 144) for _ in range(2)
    )


def bt601_limited_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The BT.601 limited-range matrix in float, chroma upsampled bilinearly (the reference)."""
    h, w = y.shape
    uu, vv = (
        cv2.resize(p.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for p in (u, v)
    )
    yc = (y.astype(np.float32) - 16) * 255 / 219
    cb, cr = (uu - 128) * 255 / 224, (vv - 128) * 255 / 224
    rgb = np.stack([yc + 1.402 * cr, yc - 0.344136 * cb - 0.714136 * cr, yc + 1.772 * cb], -1)
    return np.clip(rgb, 0, 255)


def yuv_frame(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> av.VideoFrame:
    planes = np.concatenate([y, u.reshape(-1, y.shape[1]), v.reshape(-1, y.shape[1])])
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


@pytest.mark.parametrize("width", [96, 98, 352])
def test_decoded_frames_are_c_contiguous(width: int) -> None:
    """The engine and the models take C-contiguous frames. swscale's accurate path may pad
    each RGB row for its SIMD width (on an AVX2-only CPU every width came back strided)."""
    y, u, v = smooth_planes(64, width)
    image = rgb_from_video_frame(yuv_frame(y, u, v))
    assert image.shape == (64, width, 3) and image.flags.c_contiguous


class TestDecodeMatchesTheMatrix:
    def test_no_bias_and_rounding_level_error(self) -> None:
        y, u, v = smooth_planes(96, 128)
        got = rgb_from_video_frame(yuv_frame(y, u, v)).astype(np.float64)
        ref = bt601_limited_rgb(y, u, v)
        shift = (got - ref).mean(axis=(0, 1))
        assert np.all(np.abs(shift) < 0.1), f"decoded RGB is biased by {shift} grey levels"
        assert np.abs(got - ref).mean() < 0.5


class TestRoundTrip:
    def test_rgb_yuv_rgb_keeps_the_picture(self) -> None:
        y, u, v = smooth_planes(96, 128, seed=1)
        rgb = rgb_from_video_frame(yuv_frame(y, u, v))
        back = rgb_from_video_frame(video_frame_from_rgb(rgb, "yuv420p"))
        diff = back.astype(np.float64) - rgb
        assert np.all(np.abs(diff.mean(axis=(0, 1))) < 0.1)
        assert 10 * np.log10(255**2 / np.mean(diff**2)) > 45

    def test_a_near_lossless_codec_trip_is_not_darker(self) -> None:
        """The codec benchmark's encode/decode adds no brightness shift of its own."""
        y, u, v = smooth_planes(64, 64, seed=2)
        rgb = rgb_from_video_frame(yuv_frame(y, u, v))
        out = encode_decode([rgb] * 4, "h264", 4.0).frames
        shift = (np.stack(out).astype(np.float64) - rgb).mean()
        assert abs(shift) < 0.15


@pytest.mark.parametrize(("space", "rng"), [(1, 1), (1, 2), (5, 2), (2, 0)])
def test_file_sink_converts_with_the_tagged_matrix(tmp_path: Path, space: int, rng: int) -> None:
    """BT.709 and full-range streams are written (full range once raised a KeyError) with
    their own matrix: a solid colour reads back as itself, and the tags are kept."""
    colour = np.array([200, 90, 40], np.uint8)
    image = np.broadcast_to(colour, (64, 96, 3)).copy()
    path = tmp_path / "out.mp4"
    tags = (space, rng, 1, 1)
    with FileSink(path, width=96, height=64, fps=Fraction(25), colorspace=tags) as sink:
        for i in range(3):
            sink.send(Frame(image=image, index=i, captured=0.0))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.colorspace == space
        assert stream.codec_context.color_range == (rng or 1)  # untagged: x264 writes "tv"
        frames = [rgb_from_video_frame(f) for f in container.decode(video=0)]
    assert len(frames) == 3
    mean = np.stack(frames).reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(mean - colour) < 2.0), f"{mean} read back for {colour}"
