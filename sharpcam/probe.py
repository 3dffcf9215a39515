"""Time a model on this machine at a frame size, and remember the result.

:func:`time_engine` runs ``Engine.process`` on a synthetic frame for about a second and
returns the median whole-call time (conversion included). :class:`ProbeCache` keeps
those medians in ``probes.json`` in the cache folder (:func:`~sharpcam.machine.cache_dir`),
keyed by machine (CPU model string and cores), model file (name, size and modification
time: a re-exported model is a new key), backend and frame size, so a second start on the
same machine skips the probe. Entries of a model file that has since changed are dropped
when the cache is next written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sharpcam.atomic import atomic_write_bytes
from sharpcam.machine import cache_dir, machine_key

log = logging.getLogger(__name__)

CACHE_FILE = "probes.json"
#: Bumped when what is measured changes, so old figures are not trusted.
VERSION = 1


def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An ``HxWx3 uint8`` RGB test picture: smooth gradients, edges and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / max(width, 1) * 6.0)
    g = 128 + 100 * np.cos(y / max(height, 1) * 5.0)
    b = np.where((x // 32 + y // 32) % 2 == 0, 200.0, 60.0)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def time_engine(
    engine: Any, width: int, height: int, *, seconds: float = 1.0, least: int = 3
) -> float:
    """Median milliseconds of ``engine.process`` on a ``width x height`` frame: two
    untimed calls (planning, compilation), then calls for about ``seconds`` (at least
    ``least``)."""
    frame = synthetic_frame(width, height)
    for _ in range(2):
        engine.process(frame)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < least or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        engine.process(frame)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def model_key(path: Path) -> str:
    """``name:size:mtime_ns`` of a model file: changes whenever the file does."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


class ProbeCache:
    """Measured model times, on disk, per machine, model file, backend and size.

    Args:
        folder: where ``probes.json`` lives (default :func:`cache_dir`).
        machine: the machine's key (default :func:`machine_key`; tests pass others).
    """

    def __init__(self, folder: Path | None = None, machine: str | None = None) -> None:
        self.path = (folder or cache_dir()) / CACHE_FILE
        self.machine = machine or machine_key()
        self.hits = 0
        self.misses = 0

    def _key(self, model: Path, backend: str, width: int, height: int) -> str:
        return f"v{VERSION}|{self.machine}|{model_key(model)}|{backend}|{width}x{height}"

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, model: Path, backend: str, width: int, height: int) -> float | None:
        """The cached median ms, or ``None`` (a miss)."""
        ms = self._load().get(self._key(model, backend, width, height))
        if ms is None:
            self.misses += 1
        else:
            self.hits += 1
        return ms

    def put(self, model: Path, backend: str, width: int, height: int, ms: float) -> None:
        """Remember ``ms``; entries of this model path with another size/mtime go."""
        key = self._key(model, backend, width, height)
        path_part = f"|{model.resolve()}:"
        current = model_key(model)
        data = {k: v for k, v in self._load().items() if path_part not in k or f"|{current}|" in k}
        data[key] = round(ms, 3)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError as exc:  # a read-only home: probe again next time
            log.debug("cannot write %s: %s", self.path, exc)

    def measure(
        self, engine: Any, label: str, width: int, height: int, *, seconds: float = 1.0
    ) -> float:
        """The cached time of ``engine`` (backend ``label``) at this size, or a fresh
        :func:`time_engine` probe that is then cached."""
        ms = self.get(engine.model_path, label, width, height)
        if ms is None:
            ms = time_engine(engine, width, height, seconds=seconds)
            self.put(engine.model_path, label, width, height, ms)
        return ms


def probe_seconds() -> float:
    """How long each variant is timed: ``$SHARPCAM_PROBE_SECONDS`` or 1 s."""
    try:
        return float(os.environ.get("SHARPCAM_PROBE_SECONDS", "1.0"))
    except ValueError:
        return 1.0
