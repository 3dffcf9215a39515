"""Shared fixtures: where the optional real data lives, and small self-made inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARPCAM_SHARED", REPO.parent / "shared"))


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real data in ../shared is not on this machine")
    return path


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """``../shared/data/photos`` (skips cleanly when absent)."""
    return _shared("data/photos")


@pytest.fixture(scope="session")
def video_dir() -> Path:
    """``../shared/data/video`` (skips cleanly when absent)."""
    return _shared("data/video")
