"""The frozen teacher (Restormer from its release checkpoint) and a disk cache of its outputs.

* :func:`load_teacher` reads ``single_image_defocus_deblurring.pth`` (or downloads it into
  the cache folder) and checks that it is one: a dict with ``params`` whose names and
  shapes are exactly those of :class:`training.restormer.Restormer`.
* :class:`Teacher` runs it frozen, under :func:`torch.inference_mode`, on ``[N, 3, H, W]``
  RGB in ``[0, 1]`` of any size (reflect-padded to a multiple of 8 and cropped back),
  optionally in overlapping tiles to bound memory on big images.
* :class:`TeacherCache` keeps its outputs on disk per (patch, degradation, checkpoint):
  Restormer costs about 140 GFLOPs per 256x256 patch, so a run computes each target once
  (:meth:`TeacherCache.precompute`) instead of once per epoch.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sharpcam.atomic import atomic_path
from training.restormer import DEFOCUS_CONFIG, MULTIPLE, Restormer, RestormerConfig
from training.weights import (
    RESTORMER_DEFOCUS,
    WeightsError,
    fetch_known,
    file_sha256,
    read_checkpoint,
    state_dict_mismatch,
)

log = logging.getLogger(__name__)

_FIX = f"pass the official {RESTORMER_DEFOCUS.filename} with --teacher PATH"


class Teacher:
    """A frozen image-to-image network run for targets, never trained.

    Args:
        model: maps ``[N, 3, H, W]`` to ``[N, 3, H, W]`` for H, W multiples of 8 (normally a
            :class:`~training.restormer.Restormer`); it is put in eval mode, its parameters
            get ``requires_grad=False`` and it is moved to ``device``.
        checkpoint_hash: hex SHA-256 of the weights file, used in cache keys.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...).
        path: the weights file, for messages.

    The wrapper is deliberately not an ``nn.Module``: the teacher's parameters cannot end
    up in a student's optimizer or ``state_dict`` by being a sub-module of it.
    """

    #: Names the cache folder of this teacher's outputs (``<kind>-<sha256>``).
    kind = "restormer"
    #: Output size / input size.
    scale = 1

    def __init__(
        self,
        model: nn.Module,
        *,
        checkpoint_hash: str,
        device: str | torch.device = "cpu",
        path: Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.path = path
        self._hash = checkpoint_hash

    @property
    def checkpoint_hash(self) -> str:
        """Hex SHA-256 of the checkpoint file (64 digits); part of every cache path."""
        return self._hash

    def describe(self) -> str:
        """One line for reports and model metadata."""
        name = self.path.name if self.path is not None else "checkpoint"
        return f"Restormer defocus deblurring, {name} (sha256 {self._hash[:12]}...)"

    def __call__(
        self, frames: torch.Tensor, *, tile: int | None = None, tile_overlap: int = 32
    ) -> torch.Tensor:
        """Sharpen a batch.

        Args:
            frames: ``[N, 3, H, W]`` float RGB in ``[0, 1]``, any H and W, any device.
            tile: run in ``tile x tile`` pieces (a multiple of 8) when the image is larger;
                ``None`` runs the whole image at once. Restormer's attention spans the
                whole input, so tiled output differs slightly from untiled output; use
                tiles only to fit big images in memory (full-image evaluation).
            tile_overlap: pixels shared by neighbouring tiles; each tile's output is kept
                only away from the cut (half the overlap each side), so a network whose
                receptive field is within ``tile_overlap // 2`` gives the untiled result.

        Returns:
            ``[N, 3, H, W]`` float32 in ``[0, 1]`` on the device of ``frames``: an ordinary
            tensor (not an inference tensor), usable as a target in a loss.

        Raises:
            TypeError: ``frames`` is not a floating-point tensor.
            ValueError: wrong shape, or ``tile``/``tile_overlap`` out of range.
        """
        if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
            raise TypeError(f"frames must be a float tensor, got {_describe(frames)}")
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [N, 3, H, W], got {list(frames.shape)}")
        if tile is not None and (tile < MULTIPLE or tile % MULTIPLE):
            raise ValueError(f"tile must be a positive multiple of {MULTIPLE}, got {tile}")
        if tile is not None and not 0 <= tile_overlap < tile:
            raise ValueError(f"tile_overlap must be in [0, tile), got {tile_overlap}")
        h, w = frames.shape[-2:]
        with torch.inference_mode():
            x = _pad_to_multiple(frames.to(self.device, torch.float32), MULTIPLE)
            if tile is None or (x.shape[-2] <= tile and x.shape[-1] <= tile):
                out = self.model(x)
            else:
                out = self._tiled(x, tile, tile_overlap)
            out = out[..., :h, :w].clamp_(0.0, 1.0)
        out = out.to(frames.device)
        # A copy made outside inference mode is a normal tensor, which autograd may save
        # (a loss such as mse_loss(student, target) fails on an inference tensor).
        return out.clone() if out.is_inference() else out

    def _tiled(self, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        out = torch.empty_like(x)
        th, tw = min(tile, x.shape[-2]), min(tile, x.shape[-1])
        for y0, ky0, ky1 in _spans(x.shape[-2], th, overlap):
            for x0, kx0, kx1 in _spans(x.shape[-1], tw, overlap):
                piece = self.model(x[..., y0 : y0 + th, x0 : x0 + tw])
                out[..., ky0:ky1, kx0:kx1] = piece[..., ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0]
        return out

    def enhance_uint8(self, patches: np.ndarray) -> np.ndarray:
        """Run on ``NxHxWx3 uint8`` RGB; return ``NxHxWx3 float32`` in ``[0, 1]`` (CPU)."""
        if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(
                f"patches must be NxHxWx3 uint8, got {patches.dtype} {list(patches.shape)}"
            )
        frames = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2)
        out = self(frames.float().div_(255.0))
        return out.permute(0, 2, 3, 1).contiguous().numpy()


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array"
    return type(value).__name__


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W at the bottom/right to multiples (reflect; replicate if too small)."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _spans(length: int, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis: (start, keep_from, keep_to); the kept parts cover [0, length)."""
    if size >= length:
        return [(0, 0, length)]
    starts = [*range(0, length - size, size - overlap), length - size]
    lo, hi = overlap // 2, overlap - overlap // 2
    return [
        (s, s + lo if s > 0 else 0, s + size - hi if s + size < length else length) for s in starts
    ]


def load_teacher(
    path: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    config: RestormerConfig = DEFOCUS_CONFIG,
    progress: bool = True,
) -> Teacher:
    """Load the Restormer defocus teacher, frozen.

    Args:
        path: the checkpoint (``{"params": state_dict}``, as released); ``None`` downloads
            :data:`training.weights.RESTORMER_DEFOCUS` into ``cache_dir`` once.
        cache_dir: download folder (default :func:`training.weights.default_cache_dir`).
        device: where the teacher runs.
        config: the architecture to expect; the default is the released model's (tests
            use small ones with :func:`training.restormer.save_random_checkpoint`).
        progress: show a download progress bar.

    Raises:
        WeightsError: one line: the file is missing, unreadable, not a dict with
            ``params``, or its names/shapes differ from the architecture (counts and the
            first few keys of each kind are named); or the download failed.
    """
    file = (
        Path(path)
        if path is not None
        else fetch_known(RESTORMER_DEFOCUS, cache_dir, progress=progress)
    )
    checkpoint = read_checkpoint(file, what="Restormer checkpoint", flag="--teacher")
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("params"), Mapping):
        found = (
            f"keys {', '.join(map(str, list(checkpoint)[:5]))}"
            if isinstance(checkpoint, Mapping)
            else type(checkpoint).__name__
        )
        raise WeightsError(
            f"{file} is not a Restormer release checkpoint (expected a dict with 'params', "
            f"found {found}); {_FIX}"
        )
    params = checkpoint["params"]
    model = Restormer(config)
    expected = {name: t.shape for name, t in model.state_dict().items()}
    problem = state_dict_mismatch(expected, params)
    if problem is not None:
        raise WeightsError(f"{file} is not a Restormer defocus checkpoint: {problem}; {_FIX}")
    model.load_state_dict(params, strict=True)
    return Teacher(model, checkpoint_hash=file_sha256(file), device=device, path=file)


# One path component of a cache key: starts with a letter or digit (so never "." or "..",
# nor the hidden temporary names of atomic writes), then letters, digits and ._+=-
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def cache_key(patch_id: str, degradation: str) -> str:
    """The :class:`TeacherCache` key ``"<degradation>/<patch_id>"``.

    ``patch_id`` must identify the source pixels (e.g. image SHA-256 prefix, y, x, size)
    and ``degradation`` the exact degraded patch given the source (name, plus parameters or
    seed if it is random): the cache trusts the key and does not look at the pixels on a hit.

    Raises:
        ValueError: a part is empty or has characters other than letters, digits and
            ``._+=-`` (or starts with one of ``._+=-``).
    """
    for part in (patch_id, degradation):
        if not _COMPONENT.fullmatch(part):
            raise ValueError(f"cache key part {part!r} must match {_COMPONENT.pattern}")
    return f"{degradation}/{patch_id}"


class TeacherCache:
    """Teacher outputs on disk, computed on a miss.

    Entries are ``<root>/<kind>-<checkpoint sha256>/<key>.npy`` (kind ``restormer``, or
    ``sharpcam`` for a sharpcam model as the teacher): float16 arrays ``HxWx3`` in
    ``[0, 1]``, the input's size times the teacher's ``scale``. float16 rather than 16-bit
    PNG because loading is a plain read with no decoding (the training loop reads every
    entry each epoch) and its rounding error (at most 2.4e-4 in [0.5, 1], less below) is
    1/16 of an 8-bit step, far below what the student can learn from 8-bit inputs; a
    256x256 entry is 384 KiB.
    Entries are written atomically; an entry that cannot be read, or has the wrong dtype,
    shape or values, is recomputed and replaced.

    Args:
        root: cache folder (created on first write).
        teacher: the network; its ``checkpoint_hash`` is part of every path, so another
            checkpoint never sees these entries.

    Attributes:
        hits, misses, repaired: counts since creation (``repaired`` entries were
            unreadable or wrong and were recomputed; they count as misses too).
    """

    def __init__(self, root: str | os.PathLike[str], teacher: Teacher) -> None:
        self.root = Path(root)
        self.teacher = teacher
        self.folder = (
            self.root / f"{getattr(teacher, 'kind', 'restormer')}-{teacher.checkpoint_hash}"
        )
        self.scale = int(getattr(teacher, "scale", 1))
        self.hits = 0
        self.misses = 0
        self.repaired = 0

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (``key`` components as in :func:`cache_key`).

        Raises:
            ValueError: ``key`` has an empty or unsafe component.
        """
        parts = key.split("/")
        for part in parts:
            if not _COMPONENT.fullmatch(part):
                raise ValueError(
                    f"cache key {key!r}: part {part!r} must match {_COMPONENT.pattern}"
                )
        return self.folder.joinpath(*parts[:-1], parts[-1] + ".npy")

    def get(self, key: str, degraded_patch: np.ndarray) -> np.ndarray:
        """The teacher's output for ``degraded_patch``, from disk or computed and stored.

        Args:
            key: identifies the degraded patch, e.g. ``cache_key(patch_id, degradation)``.
            degraded_patch: ``HxWx3 uint8`` RGB.

        Returns:
            ``HxWx3 float32`` in ``[0, 1]``; the same values on a hit and on the miss that
            stored them (both are the float16-rounded output).

        Raises:
            ValueError: bad ``key`` or ``degraded_patch``.
        """
        _check_patch(degraded_patch)
        path = self.path(key)
        cached = self._load(path, self.output_shape(degraded_patch))
        if cached is not None:
            self.hits += 1
            return cached
        return self._compute([(path, degraded_patch)])[0]

    def precompute(
        self,
        items: Iterable[tuple[str, np.ndarray]],
        batch_size: int = 8,
        *,
        progress: bool = True,
    ) -> int:
        """Fill the cache for ``(key, degraded_patch)`` pairs, running the teacher in batches.

        Valid entries are skipped; consecutive patches of the same shape are batched.

        Returns:
            How many entries were computed.

        Raises:
            ValueError: bad key, patch or ``batch_size``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = len(items) if isinstance(items, Sized) else None
        computed = 0
        batch: list[tuple[Path, np.ndarray]] = []
        for key, patch in tqdm(
            items, total=total, desc="teacher targets", unit="patch", disable=not progress
        ):
            _check_patch(patch)
            path = self.path(key)
            if self._load(path, self.output_shape(patch)) is not None:
                continue
            if batch and (len(batch) == batch_size or patch.shape != batch[0][1].shape):
                computed += len(self._compute(batch))
                batch = []
            batch.append((path, patch))
        if batch:
            computed += len(self._compute(batch))
        return computed

    def output_shape(self, patch: np.ndarray) -> tuple[int, int, int]:
        """The shape of the teacher's output for ``patch`` (its scale times the input's)."""
        h, w = patch.shape[:2]
        return (h * self.scale, w * self.scale, 3)

    def _compute(self, batch: list[tuple[Path, np.ndarray]]) -> list[np.ndarray]:
        outputs = self.teacher.enhance_uint8(np.stack([patch for _, patch in batch]))
        results = []
        for (path, _), output in zip(batch, outputs, strict=True):
            stored = output.astype(np.float16)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, stored, allow_pickle=False)
            results.append(stored.astype(np.float32))
        self.misses += len(batch)
        return results

    def _load(self, path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        """The entry as float32, or ``None`` if absent or unusable (then counted as repaired)."""
        if not path.is_file():
            return None
        try:
            entry = np.load(path, allow_pickle=False)
            ok = (
                isinstance(entry, np.ndarray)
                and entry.dtype == np.float16
                and entry.shape == shape
                and bool(np.isfinite(entry).all())
                and entry.min() >= 0.0
                and entry.max() <= 1.0
            )
        except (OSError, ValueError, EOFError):
            ok = False
        if not ok:
            log.warning("teacher cache entry %s is damaged; recomputing it", path)
            self.repaired += 1
            return None
        return entry.astype(np.float32)


def _check_patch(patch: np.ndarray) -> None:
    if not isinstance(patch, np.ndarray) or patch.dtype != np.uint8:
        raise ValueError(f"degraded_patch must be an HxWx3 uint8 array, got {_describe(patch)}")
    if patch.ndim != 3 or patch.shape[-1] != 3 or min(patch.shape[:2]) < 1:
        raise ValueError(f"degraded_patch must be HxWx3 uint8, got shape {list(patch.shape)}")
