"""Shared fixtures: where the optional real data lives, and small self-made inputs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from helpers_media import FakeCapture

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


@pytest.fixture
def fake_camera(monkeypatch: pytest.MonkeyPatch) -> type[FakeCapture]:
    """``cv2.VideoCapture`` replaced by :class:`FakeCapture` (no webcam here): camera 0
    opens, 64x48 frames every 2 ms, never fails unless a test sets ``FAIL_AFTER``."""
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(FakeCapture, "instances", [])
    monkeypatch.setattr(FakeCapture, "OPENABLE", {0})
    monkeypatch.setattr(FakeCapture, "FAIL_AFTER", None)
    monkeypatch.setattr(FakeCapture, "SIZE", (64, 48))
    monkeypatch.setattr(FakeCapture, "INTERVAL", 0.002)
    return FakeCapture


@pytest.fixture
def ctrl_c_at_third_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third frame's model call raises ``KeyboardInterrupt`` (Ctrl-C in a file run)."""
    from sharpcam import pipeline

    real = pipeline._sharpen
    calls = []

    def interrupt_at_third(*args: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_sharpen", interrupt_at_third)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module: on a shared 2-core machine, 2 spinning threads make
    tiny nets crawl. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _probe_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fresh probe cache per test session, and short probes (``--tier/--backend auto``
    times each variant at start-up; here only which wins matters, never how fast)."""
    saved = {k: os.environ.get(k) for k in ("SHARPCAM_CACHE", "SHARPCAM_PROBE_SECONDS")}
    os.environ["SHARPCAM_CACHE"] = str(tmp_path_factory.mktemp("sharpcam-cache"))
    os.environ["SHARPCAM_PROBE_SECONDS"] = "0.05"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
