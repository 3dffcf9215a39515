"""Pretrained weights: where they come from, how they are downloaded, cached and read.

:func:`fetch` downloads one file with :mod:`urllib` (tqdm progress on stderr) into a
temporary name in the cache folder and moves it into place with :func:`os.replace` only
after its size and SHA-256 checks pass, so the cache never holds a partial or wrong file.
:func:`read_checkpoint` and :func:`state_dict_mismatch` are the shared pieces of the
teacher and VGG16 loaders: every failure is a :class:`WeightsError` whose message is one
line naming the problem and the fix (which command-line flag takes the file).

Cache folder: ``$SHARPCAM_CACHE``, else ``$XDG_CACHE_HOME/sharpcam``, else
``~/.cache/sharpcam``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from sharpcam.atomic import atomic_path

CHUNK = 1 << 20


class WeightsError(ValueError):
    """Pretrained weights are missing, unreachable or not what was expected (one line)."""


@dataclass(frozen=True)
class KnownWeights:
    """A published weights file.

    Attributes:
        url: where it is published.
        filename: its name in the cache folder.
        sha256: full hex digest or a prefix of it (at least 8 digits), or ``None`` when
            unknown (then the loader checks the file's structure instead).
        size: size in bytes, or ``None`` when unknown.
        flag: the command-line option that takes the file instead of downloading it.
    """

    url: str
    filename: str
    sha256: str | None
    size: int | None
    flag: str


#: Restormer, single-image defocus deblurring, from the authors' v1.0 GitHub release.
#: Its size and hash are not published next to it; :func:`training.teacher.load_teacher`
#: checks the structure (494 tensors with the official names and shapes) instead, and
#: :func:`fetch` prints the SHA-256 of what it downloaded so it can be pinned.
RESTORMER_DEFOCUS = KnownWeights(
    url="https://github.com/swz30/Restormer/releases/download/v1.0/single_image_defocus_deblurring.pth",
    filename="single_image_defocus_deblurring.pth",
    sha256=None,
    size=None,
    flag="--teacher",
)

#: torchvision's ImageNet VGG16 (``VGG16_Weights.IMAGENET1K_V1``). torchvision names its
#: files after the first 8 hex digits of their SHA-256 (``397923af``); the full digest is
#: the one published for the same file name on a public mirror and agrees with it.
VGG16_IMAGENET = KnownWeights(
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    filename="vgg16-397923af.pth",
    sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    size=None,
    flag="--vgg",
)


def default_cache_dir() -> Path:
    """``$SHARPCAM_CACHE``, else ``$XDG_CACHE_HOME/sharpcam``, else ``~/.cache/sharpcam``."""
    if env := os.environ.get("SHARPCAM_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "sharpcam"
    return Path.home() / ".cache" / "sharpcam"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256_arg(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    sha256 = sha256.lower()
    if not 8 <= len(sha256) <= 64 or any(ch not in "0123456789abcdef" for ch in sha256):
        raise ValueError(f"sha256 must be 8 to 64 hex digits, got {sha256!r}")
    return sha256


def _problem(path: Path, expected_size: int | None, sha256: str | None) -> str | None:
    """Why ``path`` fails the checks, or ``None`` when it passes."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"{size} bytes, expected {expected_size}"
    if sha256 is not None:
        digest = file_sha256(path)
        if not digest.startswith(sha256):
            return f"sha256 {digest[:16]}..., expected {sha256[:16]}..."
    return None


def _reason(error: BaseException) -> str:
    """Why a download failed, in one line (``HTTP Error 404: ...``, ``[Errno 111] ...``)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP Error {error.code}: {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return (
            _one_line(error.reason)
            if isinstance(error.reason, BaseException)
            else str(error.reason)
        )
    return _one_line(error)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    hint: str = "download it another way and pass its path (--teacher PATH / --vgg PATH)",
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` unless a file that passes the checks is already there.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: final path (its folder is created); the download goes to a hidden temporary
            name next to it and is moved into place only after the checks pass.
        expected_size: required size in bytes, or ``None``.
        sha256: required SHA-256, full hex digest or a prefix of at least 8 digits.
        progress: show a tqdm bar on stderr.
        hint: the fix to name in error messages (e.g. ``"pass the file with --vgg PATH"``).
        timeout: seconds to wait for the server at each step.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        WeightsError: the server is unreachable or answers with an error, the transfer is
            cut short, or the file has the wrong size or hash; nothing is left at ``dest``
            (an existing file there that fails the checks is replaced only by a good one).
        ValueError: ``sha256`` is not 8 to 64 hex digits.
    """
    final = Path(dest)
    sha256 = _check_sha256_arg(sha256)
    if final.is_file():
        problem = _problem(final, expected_size, sha256)
        if problem is None:
            return final
        print(f"{final} is damaged ({problem}); downloading it again", file=sys.stderr)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        try:
            received, announced = _download(
                url, tmp, desc=final.name, progress=progress, timeout=timeout
            )
        except (OSError, http.client.HTTPException, ValueError) as error:
            # URLError, HTTPError and timeouts are OSErrors; a garbled reply an HTTPException.
            raise WeightsError(f"cannot download {url} ({_reason(error)}); {hint}") from error
        if announced is not None and received != announced:
            raise WeightsError(
                f"download of {url} was cut short ({received} of {announced} bytes); "
                f"try again or {hint}"
            )
        problem = _problem(tmp, expected_size, sha256)
        if problem is not None:
            raise WeightsError(f"download of {url} is not the expected file ({problem}); {hint}")
        if sha256 is None or len(sha256) < 64:
            print(f"downloaded {final.name}: sha256 {file_sha256(tmp)}", file=sys.stderr)
    return final


def _download(
    url: str, tmp: Path, *, desc: str, progress: bool, timeout: float
) -> tuple[int, int | None]:
    """Stream ``url`` into ``tmp``; return (bytes received, Content-Length or None).

    A connection closed before Content-Length bytes arrived returns the short count
    (the caller reports it); other transfer errors propagate.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "sharpcam"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        announced = int(length) if length and length.isdigit() else None
        received = 0
        with (
            open(tmp, "wb") as out,
            tqdm(
                total=announced,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            try:
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except http.client.IncompleteRead as short:
                received += len(short.partial)
    return received, announced


def fetch_known(
    weights: KnownWeights, cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> Path:
    """Download ``weights`` into ``cache_dir`` (default :func:`default_cache_dir`) once.

    Raises:
        WeightsError: as :func:`fetch`, the message naming ``weights.flag``.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return fetch(
        weights.url,
        folder / weights.filename,
        expected_size=weights.size,
        sha256=weights.sha256,
        progress=progress,
        hint=f"download it another way and pass the file with {weights.flag} PATH",
    )


def read_checkpoint(path: str | os.PathLike[str], *, what: str, flag: str) -> object:
    """Load a torch checkpoint safely (``weights_only=True``) onto the CPU.

    Args:
        path: the file.
        what: what it should be, for messages (e.g. ``"Restormer checkpoint"``).
        flag: the command-line option that takes it (e.g. ``"--teacher"``).

    Raises:
        WeightsError: the file does not exist or is not a readable torch checkpoint.
    """
    file = Path(path)
    if not file.is_file():
        problem = "is not a file" if file.exists() else "does not exist"
        raise WeightsError(f"{what} {file} {problem}; pass an existing file with {flag} PATH")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"{file} is not a readable torch checkpoint ({_one_line(error)}); "
            f"pass the {what} with {flag} PATH"
        ) from error


def state_dict_mismatch(
    expected: Mapping[str, torch.Size],
    got: Mapping[str, object],
    *,
    limit: int = 3,
) -> str | None:
    """Describe how ``got`` differs from the ``expected`` names and shapes, or ``None``.

    The description is one line: counts, then the first ``limit`` names of each kind, e.g.
    ``3 missing keys (output.weight, a.b, c.d, ...), 2 unexpected (x, y)``.
    """

    def names(keys: list[str]) -> str:
        shown = ", ".join(keys[:limit])
        return f"{shown}, ..." if len(keys) > limit else shown

    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} {_shape(got[k])} instead of {list(shape)}"
        for k, shape in expected.items()
        if k in got and _shape(got[k]) != list(shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({names(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} with the wrong shape ({names(wrong)})")
    return ", ".join(parts) or None


def _shape(value: object) -> list[int] | str:
    shape = getattr(value, "shape", None)
    return list(shape) if shape is not None else type(value).__name__
