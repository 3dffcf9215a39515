"""Short frame sequences to encode: pan/zoom crops over a photo, and frames of real clips.

A still photo encodes to a single intra frame; a call is mostly predicted frames. So the
call degradation encodes sequences: :func:`pan_zoom` moves a square window over a photo
(a slow pan, a slight zoom, as a head moving in front of a webcam does) and resamples it
to ``size x size`` with INTER_AREA; :func:`read_clip` decodes a real clip.

Which clips are for what is fixed here, so no training run can see an evaluation clip:
:data:`EVALUATION_CLIPS` are only ever evaluated on (``training.evaluate_video``);
:data:`TRAINING_CLIPS` may feed training sequences.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from sharpcam.frames import rgb_from_video_frame

#: Clips of ``../shared/data/video`` kept for evaluation, never used in training
#: (file-name prefixes).
EVALUATION_CLIPS = (
    "grid_lwbsza",
    "grid_swiz3n",
    "grid_brbk7n",
    "grid_lbbc2a",
    "xiph_akiyo",
)
#: Clips that may be cut into training sequences.
TRAINING_CLIPS = ("grid_lrwp9a", "grid_sbia1a", "openh264_zhling")
#: Clip sides are cropped to a multiple of this (halving, yuv420p and the model need it).
CLIP_MULTIPLE = 8


def clip_role(path: str | Path) -> str:
    """``"evaluation"``, ``"training"`` or ``"unknown"`` for a clip file."""
    name = Path(path).name
    if name.startswith(EVALUATION_CLIPS):
        return "evaluation"
    if name.startswith(TRAINING_CLIPS):
        return "training"
    return "unknown"


def read_clip(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode a video file to ``HxWx3 uint8`` RGB frames, cropped to :data:`CLIP_MULTIPLE`.

    Raises:
        ValueError: the file cannot be decoded or holds no frame.
    """
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(rgb_from_video_frame(frame))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot decode {path} ({exc}): pass a video file") from None
    if not frames:
        raise ValueError(f"{path} holds no video frame: pass another clip")
    h, w = frames[0].shape[:2]
    h, w = h - h % CLIP_MULTIPLE, w - w % CLIP_MULTIPLE
    return [np.ascontiguousarray(f[:h, :w]) for f in frames]


def pan_zoom(
    image: np.ndarray, rng: np.random.Generator, *, size: int, frames: int
) -> list[np.ndarray]:
    """``frames`` crops of ``image`` along a random pan and zoom, each ``size x size``.

    The window side starts at ``size * z`` photo pixels (``z`` in [1, 2], limited by the
    photo) and changes by up to 15 % over the sequence; its centre drifts by up to 4 photo
    pixels per frame. Windows larger than ``size`` are shrunk with INTER_AREA, so the frames
    stay as sharp as the photo.

    Raises:
        ValueError: the photo is smaller than ``size`` on a side.
    """
    h, w = image.shape[:2]
    room = min(h, w) / size
    if room < 1:
        raise ValueError(f"a {w}x{h} photo is too small for {size}x{size} sequences")
    z0 = rng.uniform(1.0, min(2.0, room))
    z1 = float(np.clip(z0 * rng.uniform(0.85, 1.15), 1.0, room))
    step = rng.uniform(-4.0, 4.0, 2) if frames > 1 else np.zeros(2)
    travel = np.abs(step) * (frames - 1)
    side_max = size * max(z0, z1)
    lo = side_max / 2 + travel / 2
    hi = np.array([w, h]) - lo
    centre = rng.uniform(lo, np.maximum(lo, hi))
    start = centre - step * (frames - 1) / 2
    out = []
    for t in range(frames):
        a = t / max(1, frames - 1)
        side = min(round(size * ((1 - a) * z0 + a * z1)), h, w)
        cx, cy = start + step * t
        x = int(np.clip(round(cx - side / 2), 0, w - side))
        y = int(np.clip(round(cy - side / 2), 0, h - side))
        crop = image[y : y + side, x : x + side]
        if side != size:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(crop))
    return out


def clip_window(
    clip: list[np.ndarray], rng: np.random.Generator, *, size: int, frames: int
) -> list[np.ndarray]:
    """``frames`` consecutive frames of a clip, one random ``size x size`` window of each."""
    h, w = clip[0].shape[:2]
    if h < size or w < size or len(clip) < frames:
        raise ValueError(f"a {w}x{h} clip of {len(clip)} frames is too small for this window")
    t = int(rng.integers(0, len(clip) - frames + 1))
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return [np.ascontiguousarray(f[y : y + size, x : x + size]) for f in clip[t : t + frames]]
