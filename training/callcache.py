"""The encoded-sequence cache: call-degraded sequences made once, before training.

Encoding is far too slow to redo per step, so each source (a photo, or a training clip)
gives ``per_source`` sequences, degraded once by a sequence pipeline (``call``:
:func:`training.degradations.call_degrade`; ``codec``: :func:`~training.degradations.codec_degrade`)
and kept on disk. A photo's sequence is panned and zoomed over it and given a camera's
4:2:0 colour (:func:`~training.degradations.camera_chroma`); a clip's frames already have it::

    FOLDER/<sha256[:16]>_<index>/key.json       the key, and the parameters drawn
    FOLDER/<sha256[:16]>_<index>/pristine.npy   (T, S, S, 3) uint8, the sequence
    FOLDER/<sha256[:16]>_<index>/degraded.npy   (T, S, S, 3) restore / (T, S/2, S/2, 3) x2

The key is the source's SHA-256, the sequence index, the seed and every setting that
shapes the result (:class:`CacheSpec` and :data:`~training.degradations.CALL_VERSION`).
An entry whose key differs, or whose arrays are missing or misshapen, is rebuilt, not
trusted; entries are written to a temporary folder and renamed into place. Each entry's
random stream is ``default_rng([seed, sha256 prefix, index])``, so the content does not
depend on the order or number of sources.

:class:`CallPairs` serves (degraded, pristine) frame pairs from the cache, memory-mapped,
and consecutive pairs for a temporal loss.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.degradations import CALL_VERSION, MODES, SEQUENCE_PIPELINES, camera_chroma
from training.sequences import clip_window, pan_zoom

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheSpec:
    """Everything that shapes the cached sequences.

    Attributes:
        degradation: the sequence pipeline (a key of
            :data:`~training.degradations.SEQUENCE_PIPELINES`).
        mode: ``restore`` (degraded frames at full size) or ``x2`` (half size).
        size: side of the square pristine frames (a multiple of 4 in ``x2`` mode).
        min_frames, max_frames: sequence length, drawn per sequence.
        per_source: sequences made from each photo or clip.
        seed: the run's seed.
    """

    mode: str = "restore"
    size: int = 256
    degradation: str = "call"
    min_frames: int = 8
    max_frames: int = 16
    per_source: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.degradation not in SEQUENCE_PIPELINES:
            known = ", ".join(SEQUENCE_PIPELINES)
            raise ValueError(f"unknown sequence degradation {self.degradation!r}: one of {known}")
        if self.degradation == "codec" and self.mode != "restore":
            raise ValueError("the codec degradation keeps the full size: restore mode only")
        if self.size < 32 or (self.mode == "x2" and self.size % 4):
            raise ValueError(f"sequence side {self.size}: use >= 32 (a multiple of 4 for x2)")
        if not 2 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"sequence length {self.min_frames}-{self.max_frames}: need 2 <= min <= max"
            )

    def key(self, sha256: str, index: int) -> dict[str, object]:
        """What an entry must have been made with to be reused."""
        return {
            "version": CALL_VERSION,
            "sha256": sha256,
            "index": index,
            **asdict(self),
        }


@dataclass(frozen=True)
class Source:
    """A photo (``kind="photo"``: panned and zoomed) or a training clip (``"clip"``).

    ``load`` returns the photo (``HxWx3 uint8``) or the clip's frames; it is only called
    when an entry has to be built.
    """

    name: str
    sha256: str
    load: Callable[[], np.ndarray | list[np.ndarray]]
    kind: str = "photo"


@dataclass(frozen=True)
class FillSummary:
    """What :meth:`CallCache.fill` did."""

    built: int
    reused: int
    seconds: float
    sources_built: int

    @property
    def seconds_per_source(self) -> float:
        """Build time per source that had to be built (0 when none was)."""
        return self.seconds / self.sources_built if self.sources_built else 0.0


class CallCache:
    """The cache folder of one :class:`CacheSpec`."""

    def __init__(self, folder: str | Path, spec: CacheSpec) -> None:
        self.folder = Path(folder)
        self.spec = spec

    def entry(self, sha256: str, index: int) -> Path:
        return self.folder / f"{sha256[:16]}_{index}"

    def valid(self, sha256: str, index: int) -> bool:
        """True when the entry exists with the expected key and readable arrays."""
        path = self.entry(sha256, index)
        try:
            record = json.loads((path / "key.json").read_text())
            pristine = np.load(path / "pristine.npy", mmap_mode="r")
            degraded = np.load(path / "degraded.npy", mmap_mode="r")
        except (OSError, ValueError):
            return False
        s = self.spec.size // (2 if self.spec.mode == "x2" else 1)
        return (
            record.get("key") == self.spec.key(sha256, index)
            and pristine.dtype == np.uint8
            and pristine.shape[1:] == (self.spec.size, self.spec.size, 3)
            and degraded.shape == (pristine.shape[0], s, s, 3)
        )

    def build(self, source: Source, index: int, data: np.ndarray | list[np.ndarray]) -> dict:
        """Make one entry from the loaded source; returns the parameters drawn."""
        spec = self.spec
        rng = np.random.default_rng([spec.seed, int(source.sha256[:15], 16), index])
        length = int(rng.integers(spec.min_frames, spec.max_frames + 1))
        if source.kind == "clip":
            assert isinstance(data, list)
            pristine = clip_window(data, rng, size=spec.size, frames=length)
        else:
            assert isinstance(data, np.ndarray)
            pristine = camera_chroma(pan_zoom(data, rng, size=spec.size, frames=length))
        clip = SEQUENCE_PIPELINES[spec.degradation](pristine, rng, spec.mode)
        degraded = clip.lr if spec.mode == "x2" else clip.full
        assert degraded is not None
        record = {
            "key": spec.key(source.sha256, index),
            "source": source.name,
            "params": clip.params,
        }
        final = self.entry(source.sha256, index)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.folder))
        try:
            np.save(tmp / "pristine.npy", np.stack(pristine))
            np.save(tmp / "degraded.npy", np.stack(degraded))
            (tmp / "key.json").write_text(json.dumps(record, indent=1) + "\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return clip.params

    def fill(self, sources: Sequence[Source], *, progress: bool = True) -> FillSummary:
        """Build every missing or stale entry of ``sources`` (tqdm progress per source)."""
        start = time.perf_counter()
        built = reused = sources_built = 0
        bar = tqdm(
            sources,
            desc=f"{self.spec.degradation} cache ({self.spec.mode})",
            unit="src",
            disable=not progress,
        )
        for source in bar:
            todo = [i for i in range(self.spec.per_source) if not self.valid(source.sha256, i)]
            reused += self.spec.per_source - len(todo)
            if not todo:
                continue
            data = source.load()
            for i in todo:
                self.build(source, i, data)
            built += len(todo)
            sources_built += 1
        summary = FillSummary(built, reused, time.perf_counter() - start, sources_built)
        log.info(
            "call cache %s: %d sequences built, %d reused, %.1f s (%.2f s per source built)",
            self.folder,
            built,
            reused,
            summary.seconds,
            summary.seconds_per_source,
        )
        return summary

    def pairs(self, sources: Sequence[Source]) -> CallPairs:
        """The frame pairs of ``sources`` (all must be filled)."""
        entries = []
        for source in sources:
            for i in range(self.spec.per_source):
                if not self.valid(source.sha256, i):
                    raise RuntimeError(
                        f"call cache entry {self.entry(source.sha256, i)} is missing: "
                        "fill the cache first"
                    )
                path = self.entry(source.sha256, i)
                entries.append(
                    (
                        np.load(path / "degraded.npy", mmap_mode="r"),
                        np.load(path / "pristine.npy", mmap_mode="r"),
                    )
                )
        return CallPairs(entries)


class CallPairs:
    """(degraded, pristine) frame pairs of cached sequences; index ``i`` is one frame.

    Args:
        entries: per sequence, ``(degraded, pristine)`` arrays of shape ``(T, h, w, 3)``
            and ``(T, S, S, 3)``.
    """

    def __init__(self, entries: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        self.entries = list(entries)
        self.index = [(e, t) for e, (d, _) in enumerate(self.entries) for t in range(len(d))]

    def __len__(self) -> int:
        return len(self.index)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``i``: ``(degraded, pristine)`` uint8 arrays."""
        e, t = self.index[i]
        degraded, pristine = self.entries[e]
        return np.asarray(degraded[t]), np.asarray(pristine[t])

    def previous(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The pair of the frame before ``i`` in its sequence (``None`` for a first frame)."""
        _, t = self.index[i]
        if t == 0:
            return None
        return self.pair(i - 1)

    def consecutive(self) -> list[int]:
        """Indices whose frame has a predecessor (for a temporal loss on ``(i - 1, i)``)."""
        return [i for i, (_, t) in enumerate(self.index) if t > 0]
