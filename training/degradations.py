"""Degradations: how a sharp frame becomes the soft one sharpcam has to restore.

Each degradation is a small named function ``fn(image, rng) -> image`` on ``HxWx3 uint8``
RGB arrays (KAIR style), registered in :data:`DEGRADATIONS`. Randomised degradations draw
only from the ``rng`` they are given, never from global state, so a run is reproducible.
Working on uint8 mirrors what a call delivers: 8-bit frames.

The ``call`` family works on whole sequences, since a codec predicts frames from frames:
:func:`call_degrade` composes :func:`camera_softness`, :func:`sensor_noise`,
:func:`downscale` (x1, x1.5 or x2 in ``restore`` mode, exactly x2 in ``x2`` mode),
:func:`codec_round_trip` (a real H.264 or VP8 encode at 0.03-0.3 bit per pixel, see
:mod:`training.codec`) and :func:`player_upscale`. It is random and costly, so training
takes it from the encoded-sequence cache (:mod:`training.callcache`), never per step. The
``codec`` sequence degradation (:func:`codec_degrade`) is the codec alone at full size, and
:func:`camera_chroma` gives photo sequences the 4:2:0 colour a camera delivers.
:data:`CLIP_DEGRADATIONS` are the deterministic, named degradations of the video benchmark
(``seed``, ``call-h264-low``, ``call-vp8-low``, ``blocking``), and :func:`parse_mix` reads a
weighted mix such as ``call:0.8,seed:0.2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from sharpcam.frames import rgb_from_video_frame, video_frame_from_rgb
from training.codec import encode_decode

DegradeFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Degradation:
    """A registered degradation.

    Attributes:
        name: registry key, used in cache keys and reports.
        fn: ``fn(image, rng) -> image`` on ``HxWx3 uint8`` arrays, same shape out.
        deterministic: True when the output depends on the image only (then teacher
            outputs on degraded patches can be cached once per patch).
        description: one line for reports and the model card.
    """

    name: str
    fn: DegradeFn
    deterministic: bool
    description: str

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        check_image(image)
        out = self.fn(image, rng if rng is not None else np.random.default_rng(0))
        if out.shape != image.shape or out.dtype != np.uint8:
            raise RuntimeError(
                f"degradation {self.name!r} returned {out.dtype} {out.shape}, "
                f"expected uint8 {image.shape}"
            )
        return out


DEGRADATIONS: dict[str, Degradation] = {}


def register_degradation(
    name: str, *, deterministic: bool, description: str
) -> Callable[[DegradeFn], DegradeFn]:
    """Decorator adding ``fn`` to :data:`DEGRADATIONS` under ``name``."""

    def wrap(fn: DegradeFn) -> DegradeFn:
        if name in DEGRADATIONS:
            raise ValueError(f"degradation {name!r} is already registered")
        DEGRADATIONS[name] = Degradation(name, fn, deterministic, description)
        return fn

    return wrap


def get_degradation(name: str) -> Degradation:
    """Look up a degradation by name; unknown names raise ``KeyError`` listing the known."""
    try:
        return DEGRADATIONS[name]
    except KeyError:
        known = ", ".join(sorted(DEGRADATIONS))
        raise KeyError(f"unknown degradation {name!r}: choose one of {known}") from None


def check_image(image: np.ndarray) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``image`` is ``HxWx3 uint8``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"expected a uint8 numpy image, got {got}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")


@register_degradation(
    "seed",
    deterministic=True,
    description="downsample x2 (OpenCV INTER_LINEAR), upsample back (INTER_CUBIC)",
)
def seed_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The seed write-up's degradation: half size with linear, back with bicubic.

    Args:
        image: ``HxWx3 uint8``.
        rng: unused (the degradation is deterministic).

    Returns:
        ``HxWx3 uint8``, the same size as ``image``.
    """
    del rng
    h, w = image.shape[:2]
    small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# --- the call family: whole sequences, a real codec --------------------------------------

#: Model modes: ``restore`` (same size out) and ``x2`` (the decoded half-size frame in).
MODES = ("restore", "x2")
#: Downscale filters a sender's scaler may use (name -> OpenCV flag).
DOWN_FILTERS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
#: ``restore`` mode: how much a sender may have shrunk the stream before encoding.
RESTORE_FACTORS = (1.0, 1.5, 2.0)
#: Rates drawn for training, bit per pixel per frame (log-uniform). Below 0.03 an 8-16
#: frame sequence cannot pay for its keyframe and H.264 falls to ~14 dB.
CALL_BPP = (0.03, 0.3)
#: The rate of the named evaluation degradations (``call-h264-low`` ...).
LOW_BPP = 0.1
#: Bump when the call pipeline changes: cached sequences made by another version are rebuilt.
CALL_VERSION = 2  # 2: unbiased YUV <-> RGB conversions (sharpcam.frames.SWS_FLAGS)

Frames = list[np.ndarray]


@dataclass(frozen=True)
class DegradedClip:
    """A degraded sequence, in the forms the two modes take.

    Attributes:
        full: frames at the pristine size (what a ``restore`` model gets; for a downscaled
            stream this is the decoded frame upscaled bicubically, as a player shows it).
        lr: the decoded frames at half size when the stream was downscaled by exactly 2
            (what an ``x2`` model gets), else ``None``.
        params: what the pipeline drew or used (for reports and cache records).
    """

    full: Frames
    lr: Frames | None
    params: dict[str, object]

    def model_input(self, scale: int) -> Frames:
        """The frames a model of ``scale`` 1 or 2 is given."""
        if scale == 1:
            return self.full
        if self.lr is None:
            raise ValueError("this degradation keeps the full size: it has no x2 input")
        return self.lr


def check_sequence(frames: Frames) -> tuple[int, int]:
    """``(height, width)`` of a non-empty list of equal ``HxWx3 uint8`` frames."""
    if not frames:
        raise ValueError("expected at least one frame")
    for frame in frames:
        check_image(frame)
    h, w = frames[0].shape[:2]
    if any(f.shape[:2] != (h, w) for f in frames):
        raise ValueError("frames of a sequence must all have the same size")
    return h, w


def camera_softness(frames: Frames, rng: np.random.Generator) -> tuple[Frames, dict]:
    """Half the time, a webcam's soft lens: Gaussian (sigma 0.3-1.2) or disc (r 0.6-1.6) blur.

    One kernel for the whole sequence (it is the same camera).
    """
    if rng.random() >= 0.5:
        return frames, {"blur": "none"}
    if rng.random() < 0.5:
        sigma = float(rng.uniform(0.3, 1.2))
        return [cv2.GaussianBlur(f, (0, 0), sigma) for f in frames], {"blur": f"gauss{sigma:.2f}"}
    radius = float(rng.uniform(0.6, 1.6))
    k = int(np.ceil(radius)) * 2 + 1
    yy, xx = np.mgrid[:k, :k] - k // 2
    disc = (np.hypot(yy, xx) <= radius).astype(np.float32)
    disc /= disc.sum()
    return [cv2.filter2D(f, -1, disc) for f in frames], {"blur": f"disc{radius:.2f}"}


def sensor_noise(frames: Frames, rng: np.random.Generator) -> tuple[Frames, dict]:
    """Half the time, Gaussian sensor noise (sigma 1-6 grey levels), fresh in every frame."""
    if rng.random() >= 0.5:
        return frames, {"noise": 0.0}
    sigma = float(rng.uniform(1.0, 6.0))
    out = [
        np.clip(f + rng.normal(0.0, sigma, f.shape), 0, 255).round().astype(np.uint8)
        for f in frames
    ]
    return out, {"noise": round(sigma, 2)}


def even_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """``(h, w)`` divided by ``factor``, rounded to even sides (yuv420p needs them)."""
    return 2 * max(8, round(height / factor / 2)), 2 * max(8, round(width / factor / 2))


def downscale(frames: Frames, rng: np.random.Generator, factor: float) -> tuple[Frames, dict]:
    """Shrink by ``factor`` with a filter drawn from :data:`DOWN_FILTERS` (none when 1)."""
    if factor == 1.0:
        return frames, {"factor": 1.0, "filter": "none"}
    name = str(rng.choice(sorted(DOWN_FILTERS)))
    h, w = even_size(*frames[0].shape[:2], factor)
    out = [cv2.resize(f, (w, h), interpolation=DOWN_FILTERS[name]) for f in frames]
    return out, {"factor": factor, "filter": name}


def codec_round_trip(frames: Frames, rng: np.random.Generator) -> tuple[Frames, dict]:
    """A real H.264 or VP8 encode and decode at a rate drawn from :data:`CALL_BPP`."""
    codec = str(rng.choice(["h264", "vp8"]))
    bpp = float(np.exp(rng.uniform(np.log(CALL_BPP[0]), np.log(CALL_BPP[1]))))
    encoded = encode_decode(frames, codec, bpp)
    return encoded.frames, {"codec": codec, "bpp": round(bpp, 4), "real_bpp": encoded.bpp}


def player_upscale(frames: Frames, height: int, width: int) -> Frames:
    """A receiver's player: bicubic back to ``height x width`` (no-op at that size)."""
    if frames[0].shape[:2] == (height, width):
        return frames
    return [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]


def call_degrade(frames: Frames, rng: np.random.Generator, mode: str) -> DegradedClip:
    """The ``call`` pipeline: camera, sender's scaler, codec, receiver's player.

    ``restore`` draws the downscale factor from :data:`RESTORE_FACTORS`; ``x2`` always
    halves (sides must then be multiples of 4) and also keeps the decoded half-size frames.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    h, w = check_sequence(frames)
    params: dict[str, object] = {"mode": mode}
    frames, p = camera_softness(frames, rng)
    params |= p
    frames, p = sensor_noise(frames, rng)
    params |= p
    factor = 2.0 if mode == "x2" else float(rng.choice(RESTORE_FACTORS))
    frames, p = downscale(frames, rng, factor)
    params |= p
    frames, p = codec_round_trip(frames, rng)
    params |= p
    lr = frames if frames[0].shape[:2] == (h // 2, w // 2) else None
    return DegradedClip(player_upscale(frames, h, w), lr, params)


def codec_degrade(frames: Frames, rng: np.random.Generator, mode: str) -> DegradedClip:
    """The ``codec`` pipeline (``restore`` only): the real codec at a call's rate and nothing
    else, so the model sees codec blocking alone (in ``call`` it is mixed with camera blur
    and scaling, whose cure, sharpening, makes blocking worse)."""
    if mode != "restore":
        raise ValueError("the codec degradation keeps the full size: it has no x2 form")
    check_sequence(frames)
    frames, params = codec_round_trip(frames, rng)
    return DegradedClip(frames, None, {"mode": mode, "factor": 1.0, **params})


def camera_chroma(frames: Frames) -> Frames:
    """What a camera delivers: 4:2:0 chroma (one colour sample per 2x2 pixels), as every
    webcam and call codec carries it. The photos' full-resolution colour is not a call's
    pristine frame: trained against it, a model learns to invent colour edges that the
    sender never had (measured: -0.85 to -2.8 dB on codec blocking of the clips)."""
    return [
        rgb_from_video_frame(video_frame_from_rgb(np.ascontiguousarray(f), "yuv420p"))
        for f in frames
    ]


# --- named, deterministic sequence degradations (evaluation) -------------------------------


def seed_clip(frames: Frames) -> DegradedClip:
    """The seed degradation per frame; the x2 input is the INTER_LINEAR half-size frame."""
    h, w = check_sequence(frames)
    lr = [cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR) for f in frames]
    return DegradedClip(player_upscale(lr, h, w), lr, {"name": "seed"})


def low_rate_call(frames: Frames, codec: str) -> DegradedClip:
    """Half size (INTER_AREA), ``codec`` at :data:`LOW_BPP`, decoded; bicubic back up."""
    h, w = check_sequence(frames)
    if h % 4 or w % 4:
        raise ValueError(f"{w}x{h} frames: sides must be multiples of 4 to halve them")
    small = [cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for f in frames]
    encoded = encode_decode(small, codec, LOW_BPP)
    params = {"codec": codec, "bpp": LOW_BPP, "real_bpp": round(encoded.bpp, 4)}
    return DegradedClip(player_upscale(encoded.frames, h, w), encoded.frames, params)


def blocking_clip(frames: Frames) -> DegradedClip:
    """Full size, H.264 at :data:`LOW_BPP`, decoded: codec blocking alone (no x2 input)."""
    check_sequence(frames)
    encoded = encode_decode(frames, "h264", LOW_BPP)
    params = {"codec": "h264", "bpp": LOW_BPP, "real_bpp": round(encoded.bpp, 4)}
    return DegradedClip(encoded.frames, None, params)


#: Deterministic degradations of whole clips, by name (the benchmark's columns).
CLIP_DEGRADATIONS: dict[str, Callable[[Frames], DegradedClip]] = {
    "seed": seed_clip,
    "call-h264-low": lambda frames: low_rate_call(frames, "h264"),
    "call-vp8-low": lambda frames: low_rate_call(frames, "vp8"),
    "blocking": blocking_clip,
}
#: One line per clip degradation, for reports.
CLIP_DESCRIPTIONS = {
    "seed": "x1/2 INTER_LINEAR, back with INTER_CUBIC (the seed's)",
    "call-h264-low": f"x1/2 INTER_AREA, H.264 at {LOW_BPP} bpp, decoded, bicubic x2",
    "call-vp8-low": f"x1/2 INTER_AREA, VP8 at {LOW_BPP} bpp, decoded, bicubic x2",
    "blocking": f"full size, H.264 at {LOW_BPP} bpp, decoded",
}
#: Training-only, random sequence degradations (need the encoded-sequence cache).
SEQUENCE_DEGRADATIONS = {
    "call": "camera blur/noise, x1-2 downscale, H.264/VP8 at 0.03-0.3 bpp",
    "codec": "full size, H.264/VP8 at 0.03-0.3 bpp, nothing else (restore only)",
}
#: The pipeline of each sequence degradation: ``(frames, rng, mode) -> DegradedClip``.
SEQUENCE_PIPELINES: dict[str, Callable[[Frames, np.random.Generator, str], DegradedClip]] = {
    "call": call_degrade,
    "codec": codec_degrade,
}


# --- weighted mixes: "call:0.8,seed:0.2" ---------------------------------------------------


class MixError(ValueError):
    """A bad ``--degradation`` mix; the message is one line naming the fix."""


@dataclass(frozen=True)
class MixPart:
    """One degradation of a mix and its share (the shares of a mix sum to 1)."""

    name: str
    share: float

    @property
    def sequence(self) -> bool:
        """True when it degrades encoded sequences (served by the call cache)."""
        return self.name in SEQUENCE_DEGRADATIONS


@dataclass(frozen=True)
class Mix:
    """A weighted choice of degradations, e.g. ``call:0.8,seed:0.2``."""

    parts: tuple[MixPart, ...]

    def __str__(self) -> str:
        return ",".join(f"{p.name}:{p.share:g}" for p in self.parts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    def share(self, name: str) -> float:
        """The share of ``name`` (0 when absent)."""
        return sum(p.share for p in self.parts if p.name == name)

    def choose(self, rng: np.random.Generator) -> str:
        """Draw one name with the mix's shares."""
        i = rng.choice(len(self.parts), p=[p.share for p in self.parts])
        return self.parts[int(i)].name


def parse_mix(text: str) -> Mix:
    """Parse ``NAME[:WEIGHT],...``; weights are positive numbers, normalised to sum 1.

    Names are the per-image :data:`DEGRADATIONS` and the sequence ones
    (:data:`SEQUENCE_DEGRADATIONS`, :data:`CLIP_DEGRADATIONS`). A bare name has weight 1.

    Raises:
        MixError: empty text, an unknown or repeated name, a weight that is not a positive
            number.
    """
    known = sorted({*DEGRADATIONS, *SEQUENCE_DEGRADATIONS, *CLIP_DEGRADATIONS})
    hint = "write NAME:WEIGHT,... e.g. call:0.8,seed:0.2"
    if not text.strip():
        raise MixError(f"empty --degradation: {hint}")
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, _, raw = item.strip().partition(":")
        name = name.strip()
        if name not in known:
            raise MixError(
                f"unknown degradation {name!r} in {text!r}: choose from {', '.join(known)}"
            )
        if name in weights:
            raise MixError(f"degradation {name!r} appears twice in {text!r}: {hint}")
        try:
            weight = float(raw) if raw.strip() else 1.0
        except ValueError:
            raise MixError(f"weight {raw!r} of {name!r} is not a number: {hint}") from None
        if not (np.isfinite(weight) and weight > 0):
            raise MixError(f"weight {raw!r} of {name!r} must be a positive number: {hint}")
        weights[name] = weight
    total = sum(weights.values())
    return Mix(tuple(MixPart(n, w / total) for n, w in weights.items()))
