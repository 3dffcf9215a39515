"""A real encode and decode of a short frame sequence, as a video call does it (PyAV).

Two call codecs, set up the way real-time senders use them:

* ``h264``: libx264, ``preset=veryfast``, ``tune=zerolatency`` (no lookahead), no B-frames;
* ``vp8``: libvpx, ``deadline=realtime``, ``cpu-used=6``, no frame lag, error resilient.

One keyframe opens the sequence and every other frame is predicted (one GOP), so a
sequence has both intra and inter frames. Frames go in and come out as ``HxWx3 uint8`` RGB
through yuv420p (the chroma subsampling of every call codec), so both sides need even sizes;
the conversions use :data:`sharpcam.frames.SWS_FLAGS` (swscale's default path darkens every
decoded frame by about one grey level, which a model would learn to undo).

The target is a rate in *bit per pixel per frame* (bpp); a 640x360 stream at 25 fps and
100-1,500 kbit/s is 0.017-0.26 bpp. Rate control on 8-16 frames overshoots (the keyframe
costs many times a predicted frame), so :func:`encode_decode` re-encodes with a corrected
bitrate until the stream's size is within ``tolerance`` of the target: the sequence then
really has the bits a call at that rate would give it. Encoders run on one thread, so the
same frames and rate give the same bytes.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from dataclasses import dataclass, field

import av
import numpy as np

from sharpcam.frames import rgb_from_video_frame, video_frame_from_rgb

FPS = 25


@dataclass(frozen=True)
class CodecSpec:
    """How one call codec is opened with PyAV."""

    encoder: str
    decoder: str
    options: dict[str, str] = field(default_factory=dict)


CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec("libx264", "h264", {"preset": "veryfast", "tune": "zerolatency", "bf": "0"}),
    "vp8": CodecSpec(
        "libvpx",
        "vp8",
        {"deadline": "realtime", "cpu-used": "6", "lag-in-frames": "0", "error-resilient": "1"},
    ),
}


class CodecError(ValueError):
    """Frames a codec cannot take; one line naming the problem and the fix."""


@dataclass(frozen=True)
class Encoded:
    """The decoded frames of one encode and what the stream cost.

    Attributes:
        frames: decoded ``HxWx3 uint8`` RGB frames, as many as went in.
        nbytes: size of the encoded stream (all packets) in bytes.
        keyframes: per packet, whether it is an intra frame.
        codec: key of :data:`CODECS`.
        target_bpp: the rate asked for, bit per pixel per frame.
        bitrate: the encoder's ``bit_rate`` setting of this encode (bit/s at :data:`FPS`).
    """

    frames: list[np.ndarray]
    nbytes: int
    keyframes: tuple[bool, ...]
    codec: str
    target_bpp: float
    bitrate: int

    @property
    def bpp(self) -> float:
        """The rate the stream really has: bits per pixel per frame."""
        h, w = self.frames[0].shape[:2]
        return 8.0 * self.nbytes / (h * w * len(self.frames))

    @property
    def rate_error(self) -> float:
        """``bpp / target_bpp - 1``: how far the stream's size is from the target."""
        return self.bpp / self.target_bpp - 1.0


def check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    """``(height, width)`` of a non-empty run of equal, even-sized ``HxWx3 uint8`` frames."""
    if not frames:
        raise CodecError("no frames to encode: pass at least one HxWx3 uint8 frame")
    h, w = frames[0].shape[:2]
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise CodecError(f"frames must be HxWx3 uint8, got {frame.dtype} {frame.shape}")
        if frame.shape[:2] != (h, w):
            raise CodecError(f"frames differ in size ({frame.shape[:2]} vs {(h, w)})")
    if h % 2 or w % 2 or h < 16 or w < 16:
        raise CodecError(f"{w}x{h} frames cannot be encoded in yuv420p: use even sides >= 16")
    return h, w


def encode_once(frames: Sequence[np.ndarray], codec: str, bitrate: int) -> Encoded:
    """Encode ``frames`` as one GOP at ``bitrate`` bit/s (at :data:`FPS`) and decode them.

    Raises:
        CodecError: unknown codec or frames it cannot take.
    """
    if codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")
    spec = CODECS[codec]
    h, w = check_frames(frames)
    enc = av.CodecContext.create(spec.encoder, "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.framerate = fractions.Fraction(FPS, 1)
    enc.bit_rate = int(bitrate)
    enc.gop_size = len(frames)
    enc.max_b_frames = 0
    enc.thread_count = 1
    enc.options = dict(spec.options)
    packets = []
    for i, frame in enumerate(frames):
        picture = video_frame_from_rgb(np.ascontiguousarray(frame), "yuv420p")
        picture.pts = i
        packets += enc.encode(picture)
    packets += enc.encode(None)
    dec = av.CodecContext.create(spec.decoder, "r")
    dec.thread_count = 1
    decoded = [rgb_from_video_frame(f) for p in packets for f in dec.decode(p)]
    decoded += [rgb_from_video_frame(f) for f in dec.decode(None)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"{codec}: {len(frames)} frames went in, {len(decoded)} came out")
    return Encoded(
        frames=decoded,
        nbytes=sum(p.size for p in packets),
        keyframes=tuple(bool(p.is_keyframe) for p in packets),
        codec=codec,
        target_bpp=bitrate / (h * w * FPS),
        bitrate=int(bitrate),
    )


def encode_decode(
    frames: Sequence[np.ndarray],
    codec: str,
    bpp: float,
    *,
    tolerance: float = 0.15,
    tries: int = 6,
) -> Encoded:
    """Encode and decode ``frames`` at ``bpp`` bit per pixel per frame, size-matched.

    The bitrate setting is scaled by ``target / achieved`` until the stream is within
    ``tolerance`` of the target (at most ``tries`` encodes); the closest encode is returned,
    its ``target_bpp`` being ``bpp`` and its real rate :attr:`Encoded.bpp`. A rate below
    what the codec can reach (a keyframe at its coarsest quantiser) stays above the target.
    """
    if not bpp > 0:
        raise CodecError(f"bit per pixel must be positive, got {bpp}")
    h, w = check_frames(frames)
    target = bpp * h * w * FPS
    bitrate = target
    best: Encoded | None = None
    for _ in range(tries):
        got = encode_once(frames, codec, max(1000, round(bitrate)))
        got = Encoded(got.frames, got.nbytes, got.keyframes, codec, bpp, got.bitrate)
        if best is None or abs(got.rate_error) < abs(best.rate_error):
            best = got
        if abs(got.rate_error) <= tolerance:
            break
        bitrate *= 1.0 / (1.0 + got.rate_error)
    assert best is not None
    return best
