"""What the nets are fed: each half's patch set, teacher-cache keys, images as tensors.

Training, validation, the teacher cache and the export's parity check all build their
inputs here, so they cannot disagree on patch keys or on the degradation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.calldata import seed_lr
from training.config import Config, RunError
from training.data import PatchSet, Split
from training.degradations import DEGRADATIONS, MixError, get_degradation, parse_mix
from training.modes import MODES, DegradationLike, model_scale, upscale


class HalfSizeSeed:
    """The seed degradation's ``x2`` form: the patch at half size, the first step of the
    seed's blur (:func:`training.calldata.seed_lr`), as the x2 training pairs use it."""

    name = "seed-x2"
    deterministic = True
    description = "downsample x2 (OpenCV INTER_LINEAR); the model gets the half-size frame"

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        del rng
        return seed_lr(image)


def photo_degradation(spec: str) -> str:
    """The name of ``--degradation``'s per-image part: the name itself, or for a mix its
    largest per-image part (``seed`` when the mix is all call)."""
    try:
        mix = parse_mix(spec)
    except MixError as exc:
        raise RunError(str(exc)) from None
    parts = sorted((p for p in mix.parts if not p.sequence), key=lambda p: -p.share)
    return parts[0].name if parts else "seed"


def resolve_degradation(spec: str, scale: int = 1) -> DegradationLike:
    """The per-image degradation of ``--degradation`` for models of ``scale`` (the one
    place that reads the string): the name itself, or for a mix such as
    ``call:0.8,seed:0.2`` its largest per-image part (``seed`` when the mix is all call).
    Its output is the target's size divided by ``scale``. Photo evaluation, the teacher
    cache and the export's parity check use it; the call part comes from
    :mod:`training.calldata`.
    """
    name = photo_degradation(spec)
    if name not in DEGRADATIONS:
        raise RunError(f"unknown --degradation {name!r}: choose one of {', '.join(DEGRADATIONS)}")
    if scale == 1:
        return get_degradation(name)
    if scale == 2 and name == "seed":
        return HalfSizeSeed()
    raise RunError(f"--degradation {name!r} has no x{scale} form: use seed or call")


def run_degradation(config: Config) -> DegradationLike:
    """The per-image degradation of a run, in the form ``--mode`` needs."""
    return resolve_degradation(config.degradation, MODES[config.mode])


def teacher_feed(mode: str, teacher: object) -> Callable[[np.ndarray], np.ndarray]:
    """What the teacher is given for a degraded input of ``mode``: the input itself, or its
    bicubic upscale when the teacher's scale is below the mode's (Restormer in ``x2``).
    ``teacher`` None (no teacher term) gives the input itself."""
    factor = MODES[mode] // model_scale(teacher) if teacher is not None else 1
    return lambda image: upscale(image, factor)


def half_patches(config: Config, split: Split, which: str, *, validation: bool = False) -> PatchSet:
    """The patches of half ``which`` ("a" or "b"): its training patches, or with
    ``validation`` the fixed sample that validates the student trained on the other half.
    """
    return PatchSet(
        Path(split.data_dir),
        split.half(which),
        split.sha256,
        size=config.patch_size,
        stride=config.stride,
        limit=config.val_patches if validation else config.max_patches,
        seed=config.seed + 1 if validation else config.seed,
    )


def teacher_key(patches: PatchSet, index: int, config: Config) -> str:
    """The teacher-cache key of patch ``index`` degraded as ``config`` says."""
    from training.teacher import cache_key

    degradation = run_degradation(config)
    if not degradation.deterministic:
        raise RunError(
            f"degradation {config.degradation!r} is random: its teacher outputs cannot be "
            "cached per patch; use --no-teacher with it"
        )
    return cache_key(patches.patches[index].key, degradation.name)


def to_batch(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``HxWx3 uint8`` images -> ``(N, 3, H, W)`` float32 in ``[0, 1]`` on ``device``."""
    array = torch.from_numpy(np.stack(images)).to(device)
    return array.permute(0, 3, 1, 2).float().div_(255.0)


def to_batch_float(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``HxWx3 float32`` images -> ``(N, 3, H, W)`` on ``device``."""
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).contiguous()
