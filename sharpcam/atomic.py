"""Write files so that a crash at any moment leaves either the old file or the new one.

The data is written to a temporary file in the destination folder (same file system),
flushed to disk and moved into place with :func:`os.replace`, which is atomic on POSIX
and Windows.

Temporary names are short whatever the destination's name (``.sharpcam-<host>-<pid>-<rand>
.partial<suffix>``, under 50 characters) and keep the destination's suffix so tools that
pick a format from the extension (PyAV, OpenCV, ONNX, torch) still work. A process killed
with ``kill -9`` cannot remove its temporary file; the first atomic write of a later run
into the same folder removes ours whose process is gone (same host tag, dead pid) and says
so in one log line.

The host tag is 4 hex digits of the host name's SHA-1, so a folder shared between machines
is only swept of the temporaries its own host left. Containers that share both a host
name and a folder but not a process namespace would see each other's writers as gone:
give them distinct host names. Windows keeps every temporary (no sweep).

A destination that is a symbolic link is written through: the link's target gets the new
content and the link stays a link (as ``cp`` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Longest suffix kept on a temporary name (longer ones are no file format anyway).
MAX_SUFFIX = 16

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]
_OURS = re.compile(r"^\.sharpcam-([0-9a-f]{4})-(\d+)-[0-9a-f]{8}\.partial(\.[^/]*)?$")
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def temporary_sibling(path: Path) -> Path:
    """A unique, short, hidden name next to ``path`` with the same suffix.

    >>> temporary_sibling(Path("/tmp/" + "x" * 250 + ".mp4")).name  # doctest: +ELLIPSIS
    '.sharpcam-...-...-....partial.mp4'
    """
    suffix = path.suffix if len(path.suffix) <= MAX_SUFFIX else ""
    return path.with_name(f".sharpcam-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{suffix}")


def is_stale(name: str) -> bool:
    """Whether ``name`` is a temporary file of ours left by a process of this host that is
    gone (so nobody will ever move it into place)."""
    m = _OURS.match(name)
    if m is None or m.group(1) != _HOST or os.name != "posix":
        return False  # (on Windows os.kill(pid, 0) would terminate the process)
    pid = int(m.group(2))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but belongs to someone else
        return False
    return False


def remove_stale(folder: Path) -> list[Path]:
    """Remove the stale temporary files of ours in ``folder`` (see :func:`is_stale`);
    log one line naming them. Returns what was removed."""
    removed = []
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(".sharpcam-")]
    except OSError:
        return []
    for name in names:
        if is_stale(name):
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                removed.append(folder / name)
    if removed:
        shown = ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else "")
        log.info(
            "removed %d temporary file%s left in %s by an interrupted run (%s)",
            len(removed),
            "" if len(removed) == 1 else "s",
            folder,
            shown,
        )
    return removed


def _sweep_once(folder: Path) -> None:
    """:func:`remove_stale` the first time this process writes into ``folder``."""
    key = folder.absolute()
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale(key)


def destination(path: str | os.PathLike[str]) -> Path:
    """Where writing ``path`` really lands: the target of a symbolic link, else ``path``."""
    final = Path(path)
    return Path(os.path.realpath(final)) if final.is_symlink() else final


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; move it onto ``path`` only if the block succeeds.

    On any exception (or ``KeyboardInterrupt``) the temporary file is removed and the
    previous content of ``path``, if any, is untouched. A symbolic link ``path`` is written
    through (its target is replaced, the link stays).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    final = destination(path)
    _sweep_once(final.parent if str(final.parent) else Path("."))
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
