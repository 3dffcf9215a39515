"""sharpcam: real-time sharpening for video calls."""

from __future__ import annotations

__version__ = "0.1.0"
