"""A real H.264 / VP8 round trip: it changes the frames and meets the bitrate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import make_photo
from training.codec import CODECS, CodecError, encode_decode, encode_once


def mean_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(a, b, strict=True)]))


def panning(frames: int = 10, size: int = 96) -> list[np.ndarray]:
    photo = make_photo(size + 2 * frames, size + 3 * frames, seed=3)
    return [np.ascontiguousarray(photo[t : t + size, 2 * t : 2 * t + size]) for t in range(frames)]


@pytest.mark.parametrize("codec", sorted(CODECS))
class TestRoundTrip:
    def test_frames_change_and_keep_their_shape(self, codec: str) -> None:
        frames = panning()
        out = encode_decode(frames, codec, 0.1)
        assert len(out.frames) == len(frames)
        for a, b in zip(out.frames, frames, strict=True):
            assert a.shape == b.shape and a.dtype == np.uint8
        assert mean_error(out.frames, frames) > 1

    def test_one_intra_frame_then_predicted_ones(self, codec: str) -> None:
        out = encode_once(panning(), codec, 200_000)
        assert out.keyframes[0] and not any(out.keyframes[1:])

    @pytest.mark.parametrize("bpp", [0.05, 0.1, 0.3])
    def test_stream_size_meets_the_bitrate(self, codec: str, bpp: float) -> None:
        frames = panning(12, 128)
        out = encode_decode(frames, codec, bpp)
        expected_bytes = bpp * 128 * 128 * 12 / 8
        assert out.nbytes == pytest.approx(expected_bytes, rel=0.2)
        assert abs(out.rate_error) <= 0.2

    def test_more_bits_give_closer_frames(self, codec: str) -> None:
        frames = panning()

        def err(bpp: float) -> float:
            return mean_error(encode_decode(frames, codec, bpp).frames, frames)

        assert err(0.3) < err(0.05)

    def test_same_input_same_bytes(self, codec: str) -> None:
        frames = panning()
        a, b = encode_decode(frames, codec, 0.1), encode_decode(frames, codec, 0.1)
        assert a.nbytes == b.nbytes
        assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))


@pytest.mark.parametrize(
    ("frames", "codec", "match"),
    [
        ([], "h264", "no frames"),
        ([np.zeros((33, 64, 3), np.uint8)], "h264", "even sides"),
        ([np.zeros((32, 32, 3), np.float32)], "h264", "uint8"),
        ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)], "h264", "differ"),
        ([np.zeros((32, 32, 3), np.uint8)], "av1", "unknown codec"),
    ],
)
def test_bad_input_is_one_clear_error(frames: list, codec: str, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        encode_decode(frames, codec, 0.1)
