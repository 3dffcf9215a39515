"""What a ``--degradation`` mix feeds training: call frames from the cache, or photo patches.

``--degradation call:0.8,seed:0.2`` means: for 80 % of the training indices the pair is a
frame of the encoded-sequence cache (:mod:`training.callcache`; the half's own photos,
panned and zoomed, degraded by the call pipeline once before training), for 20 % it is
the patch degraded per image as before. Every sequence degradation of the mix (``call``,
``codec``) has its own cache folder. The draw depends only on (seed, stream, index),
so a resumed run sees the same pairs. A mix of one per-image degradation draws nothing
and trains exactly as before.

Modes: ``restore`` pairs are same-size; ``x2`` pairs are (half-size input, patch). In
``x2`` mode the per-image ``seed`` part gives the INTER_LINEAR half-size patch (the seed's
downscale, without its bicubic upscale).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.callcache import CacheSpec, CallCache, CallPairs, FillSummary, Source
from training.config import Config, RunError
from training.data import Split, read_rgb
from training.degradations import SEQUENCE_DEGRADATIONS, Mix, MixError, get_degradation
from training.degradations import parse_mix as _parse_mix
from training.sequences import clip_role, read_clip

log = logging.getLogger("training.distill")

#: Salt of the mix draws' random stream (kept apart from the degradations' own draws).
PICK_SALT = 0xCA11
#: Salt of the temporal term's draws of consecutive frames.
TEMPORAL_SALT = 0x7E4D


def parse_mix(config: Config) -> Mix:
    """The mix of ``--degradation`` (checked by :func:`training.config.check_config`)."""
    try:
        return _parse_mix(config.degradation)
    except MixError as exc:
        raise RunError(str(exc)) from None


def sequence_parts(mix: Mix) -> list[str]:
    """The names of the mix's sequence degradations (served by the cache), in mix order."""
    return [p.name for p in mix.parts if p.sequence]


def cache_folder(root: Path, config: Config, degradation: str = "call") -> Path:
    """Where the ``degradation`` sequences of ``config`` live under the cache root."""
    name = f"{sequence_mode(config, degradation)}_{config.patch_size}px_seed{config.seed}"
    return root / "call_sequences" / (name if degradation == "call" else f"{name}_{degradation}")


def sequence_mode(config: Config, degradation: str) -> str:
    """The cache's mode: ``deblock`` trains on the full-size ``codec`` sequences of
    ``restore`` (one cache for both)."""
    return "restore" if config.mode == "deblock" and degradation == "codec" else config.mode


def cache_spec(config: Config, degradation: str = "call") -> CacheSpec:
    return CacheSpec(
        mode=sequence_mode(config, degradation),
        size=config.patch_size,
        degradation=degradation,
        per_source=config.call_sequences,
        seed=config.seed,
    )


def half_sources(split: Split, which: str, config: Config | None = None) -> list[Source]:
    """The photos of training half ``which`` as cache sources (decoded only when built),
    then the half's training clips of ``--call-clips`` (:func:`clip_sources`)."""
    folder = Path(split.data_dir)
    photos = [
        Source(name, split.sha256[name], lambda path=folder / name: _read(path))
        for name in split.half(which)
    ]
    return photos + (clip_sources(config, which) if config is not None else [])


def training_clip_files(spec: str | None) -> list[Path]:
    """The clip files of ``--call-clips`` (sorted by name): files as given, and in folders
    the clips that :func:`training.sequences.clip_role` calls training clips. An evaluation
    clip named as a file is refused: the call benchmark's clips never feed training."""
    files: list[Path] = []
    for part in (p.strip() for p in (spec or "").split(",") if p.strip()):
        path = Path(part)
        if path.is_dir():
            files += [f for f in path.iterdir() if clip_role(f) == "training"]
        elif path.is_file():
            if clip_role(path) == "evaluation":
                raise RunError(
                    f"--call-clips {path} is an evaluation clip of the call benchmark: "
                    "never train on it (training/sequences.py lists the training clips)"
                )
            files.append(path)
        else:
            raise RunError(f"--call-clips {path} does not exist: give clip files or folders")
    if spec and not files:
        raise RunError(f"--call-clips {spec}: no training clip there")
    return sorted(set(files), key=lambda f: f.name)


def clip_sources(config: Config, which: str) -> list[Source]:
    """Half ``which``'s share of the training clips: clips alternate between halves A and
    B by name, and each gives ``--call-clip-sequences`` sources (windows drawn from its
    frames; each source's key is the clip's SHA-256 with the copy's number)."""
    files = training_clip_files(config.call_clips)
    mine = [f for i, f in enumerate(files) if (i % 2 == 0) == (which == "a")]
    sources = []
    for path in mine:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for k in range(config.call_clip_sequences):
            key = hashlib.sha256(f"{digest}#{k}".encode()).hexdigest()
            sources.append(
                Source(f"{path.name}#{k}", key, lambda p=path: read_clip(p), kind="clip")
            )
    return sources


def _read(path: Path) -> np.ndarray:
    image = read_rgb(path)
    if image is None:
        raise RunError(f"{path} cannot be decoded any more: restore it or start a new run")
    return image


def fill_call_cache(config: Config, split: Split, root: Path) -> list[FillSummary]:
    """Build the sequences of both halves for every sequence degradation of the mix (tqdm
    progress); empty when the mix has none."""
    summaries = []
    sources = half_sources(split, "a", config) + half_sources(split, "b", config)
    for name in sequence_parts(parse_mix(config)):
        cache = CallCache(cache_folder(root, config, name), cache_spec(config, name))
        summary = cache.fill(sources)
        log.info(
            "%s cache: %d sequences built (%.2f s per photo), %d reused, in %s",
            name,
            summary.built,
            summary.seconds_per_source,
            summary.reused,
            cache.folder,
        )
        summaries.append(summary)
    return summaries


@dataclass(frozen=True)
class Pick:
    """Where one training index comes from: a per-image degradation, or frame
    ``call_index`` of the ``sequence`` degradation's cache."""

    degradation: str | None = None
    call_index: int | None = None
    sequence: str = "call"


class MixedInputs:
    """The mix's choice per training index, and the cached sequence frames of one half
    (``sequences``: degradation name -> frames)."""

    def __init__(
        self, mix: Mix, mode: str, seed: int, sequences: dict[str, CallPairs] | None = None
    ) -> None:
        self.sequences = dict(sequences or {})
        for name in sequence_parts(mix):
            if name not in self.sequences or not len(self.sequences[name]):
                raise RunError(f"the mix uses {name} sequences but the {name} cache is empty")
        self.mix, self.mode, self.seed = mix, mode, seed
        self._consecutive: list[int] | None = None

    @classmethod
    def for_half(cls, config: Config, split: Split, which: str, root: Path) -> MixedInputs:
        mix = parse_mix(config)
        sequences = {}
        for name in sequence_parts(mix):
            cache = CallCache(cache_folder(root, config, name), cache_spec(config, name))
            try:
                sequences[name] = cache.pairs(half_sources(split, which, config))
            except RuntimeError as exc:
                raise RunError(str(exc)) from None
        return cls(mix, config.mode, config.seed, sequences)

    def pick(self, index: int, stream: int) -> Pick:
        """The source of training index ``index`` in ``stream`` (the epoch, or validation)."""
        if len(self.mix.parts) == 1 and not self.mix.parts[0].sequence:
            return Pick(degradation=self.mix.parts[0].name)
        rng = np.random.default_rng([self.seed, stream, index, PICK_SALT])
        name = self.mix.choose(rng)
        if name in SEQUENCE_DEGRADATIONS:
            frames = self.sequences[name]
            return Pick(call_index=int(rng.integers(len(frames))), sequence=name)
        return Pick(degradation=name)

    @property
    def temporal(self) -> CallPairs:
        """The frames the temporal term draws consecutive pairs from: ``call``'s, else the
        first sequence part's."""
        if "call" in self.sequences:
            return self.sequences["call"]
        return next(iter(self.sequences.values()))

    def consecutive(
        self, index: int, stream: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(input_{t-1}, gt_{t-1}, input_t, gt_t)``: two consecutive frames of a cached
        sequence, drawn for training index ``index`` of ``stream`` (for the temporal term).

        Which degradation the inputs carry is drawn with the mix's shares, like a training
        pick: a sequence part gives the cached degraded frames (``call``'s, else the first
        sequence part's); a per-image part (``seed``) degrades the two pristine frames
        itself, both with the same draw (:func:`per_image_input`), so the term also sees
        what a model does to consecutive frames of that degradation.
        """
        frames = self.temporal
        if self._consecutive is None:
            self._consecutive = frames.consecutive()
        rng = np.random.default_rng([self.seed, stream, index, TEMPORAL_SALT])
        i = self._consecutive[int(rng.integers(len(self._consecutive)))]
        previous = frames.previous(i)
        assert previous is not None
        d0, g0 = previous
        d1, g1 = frames.pair(i)
        name = self.mix.choose(rng)
        if name not in SEQUENCE_DEGRADATIONS:
            draw = [self.seed, stream, index, TEMPORAL_SALT, 1]
            d0 = per_image_input(name, self.mode, g0, draw)
            d1 = per_image_input(name, self.mode, g1, draw)
        return d0, g0, d1, g1

    def call_pair(self, pick: Pick) -> tuple[np.ndarray, np.ndarray]:
        """``(input, ground truth)`` of a sequence pick."""
        assert pick.call_index is not None
        return self.sequences[pick.sequence].pair(pick.call_index)


def per_image_input(name: str, mode: str, gt: np.ndarray, draw: list[int]) -> np.ndarray:
    """The model input of pristine frame ``gt`` under the per-image degradation ``name``: as
    for a photo patch, the half-size :func:`seed_lr` frame in ``x2`` mode; the generator is
    made from ``draw``, so frames given the same ``draw`` get the same random parameters."""
    if mode == "x2":
        return seed_lr(gt)
    return get_degradation(name)(np.ascontiguousarray(gt), np.random.default_rng(draw))


def seed_lr(patch: np.ndarray) -> np.ndarray:
    """The x2 input of the ``seed`` degradation: the INTER_LINEAR half-size patch."""
    h, w = patch.shape[:2]
    return cv2.resize(patch, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
