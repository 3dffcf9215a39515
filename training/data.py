"""Data preparation, as the seed write-up describes it.

1. Keep only images whose height and width are divisible by 8; unreadable files are
   skipped with one warning line each.
2. Seed 42: 80 % train / 20 % test, the same draw as scikit-learn's
   ``train_test_split(files, test_size=0.2, random_state=42)`` (a ``RandomState(42)``
   permutation, test first); the train part is cut into halves A and B (A gets the
   smaller half when the count is odd); up to 50 test images form the showcase set.
3. The split is written as ``split.json`` (names and SHA-256 of every file) so a run
   can be audited and reused.
4. Training patches are 256x256 and non-overlapping (stride 256), cut **on the fly** from
   the decoded images held in memory: slicing is free, the degradation of a 256x256
   patch costs microseconds, and nothing has to be re-cut when the degradation or the
   patch size changes. Only the teacher's outputs, which are expensive, are cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sharpcam.atomic import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MULTIPLE = 8


class DataError(ValueError):
    """Bad training data; the message is one line naming the problem and the fix."""


def read_rgb(path: Path) -> np.ndarray | None:
    """Decode an image file to ``HxWx3 uint8`` RGB, or ``None`` if it cannot be decoded."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: its file name (relative to the data folder), size and hash."""

    name: str
    height: int
    width: int
    sha256: str


@dataclass(frozen=True)
class Scan:
    """The result of scanning a data folder."""

    kept: tuple[ImageRecord, ...]
    dropped: tuple[tuple[str, str], ...]  # (file name, reason)


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` by suffix, sorted (nothing is decoded: a quick check).

    Raises:
        DataError: the folder is missing or holds no image files.
    """
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist: pass --data with a folder of photos")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"data folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
            "pass --data with a folder of photos"
        )
    return files


def scan_folder(folder: Path) -> Scan:
    """List the images of ``folder`` that are readable and have sides divisible by 8.

    Raises:
        DataError: the folder is missing, holds no image files, or none is usable.
    """
    files = list_images(folder)
    kept: list[ImageRecord] = []
    dropped: list[tuple[str, str]] = []
    for path in files:
        image = read_rgb(path)
        if image is None:
            log.warning("skipping %s: the file cannot be decoded as an image", path.name)
            dropped.append((path.name, "unreadable"))
            continue
        h, w = image.shape[:2]
        if h % MULTIPLE or w % MULTIPLE:
            dropped.append((path.name, f"{w}x{h} not divisible by {MULTIPLE}"))
            continue
        kept.append(ImageRecord(path.name, h, w, sha256_file(path)))
    if not kept:
        raise DataError(
            f"no usable image in {folder}: {len(dropped)} dropped (unreadable or sides not "
            f"divisible by {MULTIPLE}); crop photos to multiples of {MULTIPLE} pixels"
        )
    return Scan(tuple(kept), tuple(dropped))


def train_test_indices(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of scikit-learn's ``train_test_split(range(n), test_size, random_state=seed)``.

    scikit-learn draws one ``RandomState(seed).permutation(n)``; the first
    ``ceil(test_size * n)`` entries are the test set, the next ``floor((1 - test_size) * n)``
    the train set, both in permutation order.
    """
    n_test = math.ceil(test_size * n)
    n_train = math.floor((1.0 - test_size) * n)
    if n_train < 2 or n_test < 1:
        raise DataError(
            f"{n} usable images are too few to split {1 - test_size:.0%}/{test_size:.0%} "
            "into two training halves and a test set: add photos"
        )
    perm = np.random.RandomState(seed).permutation(n)
    return [int(i) for i in perm[n_test : n_test + n_train]], [int(i) for i in perm[:n_test]]


@dataclass(frozen=True)
class Split:
    """Who is used for what. Lists hold file names relative to ``data_dir``."""

    data_dir: str
    seed: int
    test_size: float
    train_a: tuple[str, ...]
    train_b: tuple[str, ...]
    test: tuple[str, ...]
    showcase: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)

    def half(self, which: str) -> tuple[str, ...]:
        """``"a"`` or ``"b"``: that training half."""
        return {"a": self.train_a, "b": self.train_b}[which]

    def save(self, path: Path) -> None:
        """Write the manifest as JSON (atomically)."""
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Split:
        """Read a manifest written by :meth:`save`."""
        try:
            raw = json.loads(path.read_text())
            raw["dropped"] = tuple(tuple(d) for d in raw.get("dropped", ()))
            for key in ("train_a", "train_b", "test", "showcase"):
                raw[key] = tuple(raw[key])
            return cls(**raw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"split manifest {path} is unreadable ({exc}): delete it or pass another"
            ) from exc

    def verify(self, folder: Path) -> None:
        """Check that every file of the split is in ``folder`` with the recorded hash."""
        for name in (*self.train_a, *self.train_b, *self.test):
            path = folder / name
            if not path.is_file():
                raise DataError(
                    f"{path} from the split manifest is missing: restore it or start a new run"
                )
            if self.sha256 and sha256_file(path) != self.sha256.get(name):
                raise DataError(
                    f"{path} changed since the split was made: restore it or start a new run"
                )


def make_split(
    folder: Path, *, seed: int = 42, test_size: float = 0.2, showcase: int = 50
) -> Split:
    """Scan ``folder`` and split it as the seed did (see the module docstring)."""
    scan = scan_folder(folder)
    names = [r.name for r in scan.kept]
    train_idx, test_idx = train_test_indices(len(names), test_size, seed)
    train = [names[i] for i in train_idx]
    test = [names[i] for i in test_idx]
    half = len(train) // 2
    pick = np.random.RandomState(seed).permutation(len(test))[: min(showcase, len(test))]
    return Split(
        data_dir=str(folder),
        seed=seed,
        test_size=test_size,
        train_a=tuple(train[:half]),
        train_b=tuple(train[half:]),
        test=tuple(test),
        showcase=tuple(test[int(i)] for i in pick),
        dropped=scan.dropped,
        sha256={r.name: r.sha256 for r in scan.kept},
    )


def patch_origins(
    height: int, width: int, size: int = 256, stride: int = 256
) -> list[tuple[int, int]]:
    """Top-left corners of the patches the seed's loop over height and width cuts.

    A patch is kept only when it fits entirely, so an ``H x W`` image gives
    ``(floor((H - size) / stride) + 1) * (floor((W - size) / stride) + 1)`` patches
    (none when it is smaller than ``size``).
    """
    return [
        (y, x)
        for y in range(0, height - size + 1, stride)
        for x in range(0, width - size + 1, stride)
    ]


@dataclass(frozen=True)
class Patch:
    """Where a patch comes from; ``key`` identifies it in caches."""

    image: int  # index into the list of decoded images
    y: int
    x: int
    key: str


class PatchSet:
    """The patches of a list of images, decoded once and cut on the fly.

    Args:
        folder: data folder.
        names: image file names in it.
        sha256: name -> hash, used in patch keys (so a cache entry follows the content).
        size, stride: patch geometry.
        limit: keep only the first ``limit`` patches of a fixed shuffle (quick runs).
    """

    def __init__(
        self,
        folder: Path,
        names: Sequence[str],
        sha256: dict[str, str],
        *,
        size: int = 256,
        stride: int = 256,
        limit: int | None = None,
        seed: int = 42,
    ) -> None:
        self.size = size
        self.images: list[np.ndarray] = []
        patches: list[Patch] = []
        for name in names:
            image = read_rgb(folder / name)
            if image is None:
                raise DataError(
                    f"{folder / name} cannot be decoded any more: restore it or start a new run"
                )
            index = len(self.images)
            self.images.append(image)
            digest = sha256.get(name) or hashlib.sha256(image.tobytes()).hexdigest()
            for y, x in patch_origins(*image.shape[:2], size, stride):
                patches.append(Patch(index, y, x, f"{digest[:16]}_{y}_{x}_{size}"))
        if limit is not None and limit < len(patches):
            order = np.random.RandomState(seed).permutation(len(patches))[:limit]
            patches = [patches[i] for i in sorted(order)]
        self.patches = patches

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i: int) -> np.ndarray:
        """The ``size x size x 3 uint8`` ground-truth patch ``i``."""
        p = self.patches[i]
        return self.images[p.image][p.y : p.y + self.size, p.x : p.x + self.size]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))
