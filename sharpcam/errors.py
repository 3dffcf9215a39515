"""The errors a sharpcam user can meet, each carrying one line that names the problem and the fix.

Every error the runtime raises on purpose derives from :class:`SharpcamError`; the command
line prints ``sharpcam: <message>`` and exits with :attr:`SharpcamError.exit_code`. Messages
are single lines: whatever built them folds newlines away (see :func:`one_line`).
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` without ANSI colours, with whitespace runs folded to one space, cut at ``limit``.

    >>> one_line("a\\n  b\\x1b[0m c")
    'a b c'
    """
    flat = " ".join(_ANSI.sub("", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class SharpcamError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is one line naming problem and fix."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message, limit=600))


class ModelError(SharpcamError):
    """The ONNX model is missing, unreadable, corrupt or breaks the contract in
    :mod:`sharpcam.contract`."""


class ProviderError(SharpcamError):
    """The execution provider asked for (``tensorrt``, ``cuda``) cannot run here;
    :attr:`reason` is why, without the advice on what to do."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or str(self)


class SourceError(SharpcamError):
    """A camera or input video cannot be opened or read."""


class SinkError(SharpcamError):
    """An output (virtual camera, file, preview window) cannot be opened or written."""


class UsageError(SharpcamError):
    """Options that contradict each other or name nothing usable (exit code 2, like argparse)."""

    exit_code = 2
