"""Open the engine the user asked for: model by mode and tier, backend, probe, step-down.

This is what the commands (and the relay) call; :class:`~sharpcam.engine.Engine` runs one
model on one backend, :mod:`sharpcam.tiers` decides, :mod:`sharpcam.probe` measures.

>>> engine = open_engine(EngineSettings(upscale=2), width=640, height=360, fps=30, live=True)
...                                                    # doctest: +SKIP
>>> big = engine.process(rgb_360p)                     # 720x1280x3   # doctest: +SKIP

How it decides (``tier="auto"``, ``backend="auto"``):

1. The models of the asked mode (``restore`` for ``upscale=1``, ``x2`` for 2) are found
   in ``models/`` by their metadata (:func:`sharpcam.models.find_models`); ``model=PATH``
   overrides that with one file, whose scale must match.
2. Backends: ONNX Runtime always (TensorRT/CUDA/CPU); OpenVINO beside it when installed
   and ONNX Runtime lands on the CPU.
3. With a frame size and a frame rate, each (tier, backend) is timed on this machine at
   that size for about a second, unless :class:`~sharpcam.probe.ProbeCache` already has
   the figure, and :func:`sharpcam.tiers.choose` picks. One log line says what and why.
4. Live (a camera, the relay), :class:`TieredEngine` steps down a tier when the model
   has stayed slower than the frame interval for a few seconds, and says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sharpcam.backends import BACKEND_CHOICES
from sharpcam.backends import openvino as ov_backend
from sharpcam.contract import default_model_path
from sharpcam.engine import Engine, check_model_file
from sharpcam.errors import ModelError, ProviderError
from sharpcam.models import (
    TIER_CHOICES,
    TIERS,
    ModelInfo,
    asked_mode,
    find_models,
    int8_twin,
    models_dir,
    read_info,
    scale_problem,
)
from sharpcam.probe import ProbeCache, probe_seconds
from sharpcam.temporal import blend_ms
from sharpcam.tiers import Choice, OverrunMonitor, Variant, choose, lower_tier

log = logging.getLogger("sharpcam.runtime")

UPSCALE_CHOICES = (1, 2)


@dataclass(frozen=True)
class EngineSettings:
    """What to run, as the command-line options say it.

    Attributes:
        model: one ONNX file (overrides ``tier``); ``None``: search ``models``.
        tier: ``"auto"``, ``"quality"``, ``"balanced"`` or ``"fast"``.
        backend: ``"auto"``, ``"onnxruntime"`` or ``"openvino"``.
        provider: ONNX Runtime's provider (``"auto"``, ``"tensorrt"``, ``"cuda"``, ``"cpu"``).
        threads: CPU threads (``None``: all cores).
        upscale: 1 (restore) or 2 (×2 super-resolution).
        deblock: the ``deblock`` models instead of ``restore`` (full-size decoded call
            video: codec blocking rather than a soft camera); needs ``upscale`` 1.
        models: the folder searched for tiers (``None``: :func:`~sharpcam.models.models_dir`).
        cache: the probe cache folder (``None``: :func:`~sharpcam.machine.cache_dir`).
        stabilize: the frames go through :class:`~sharpcam.temporal.Stabilizer` after the
            model, on the same thread: its time at the frame size (measured at start-up) is
            added to every tier's probe and to the live overrun check.
    """

    model: Path | None = None
    tier: str = "auto"
    backend: str = "auto"
    provider: str = "auto"
    threads: int | None = None
    upscale: int = 1
    deblock: bool = False
    models: Path | None = None
    cache: Path | None = None
    stabilize: bool = False

    def __post_init__(self) -> None:
        asked_mode(self.upscale, self.deblock)  # contradicting options fail here, early

    @property
    def mode(self) -> str:
        """The models' mode: ``x2``, ``deblock`` or ``restore``."""
        return asked_mode(self.upscale, self.deblock)


def resolve_models(settings: EngineSettings) -> dict[str, ModelInfo]:
    """The candidate models by tier, best first.

    Raises:
        ModelError: the named model is missing, unreadable or of the wrong scale; no model
            of the mode or tier asked for.
    """
    mode = settings.mode
    folder = settings.models or models_dir()
    named = settings.model
    if named is None and os.environ.get("SHARPCAM_MODEL"):
        named = default_model_path()
    if named is not None:
        check_model_file(named, named=settings.model is not None)
        info = read_info(named)
        if problem := scale_problem(info, settings.upscale, alternative=_other(folder, mode)):
            raise ModelError(problem)
        return {info.tier: info}
    found = find_models(folder, mode=mode)
    if not found:
        if mode == "restore":
            path = default_model_path()
            check_model_file(path, named=False)
            return {"quality": read_info(path)}
        flag, kind = ("--deblock", "deblock") if settings.deblock else ("--upscale", "×2")
        raise ModelError(
            f"no ×{settings.upscale} ({mode}) model in {folder} (none has sharpcam.mode={mode} "
            f"in its metadata); pass --model PATH of a {kind} model, or drop {flag}"
        )
    if settings.tier != "auto":
        if settings.tier not in found:
            have = ", ".join(found)
            raise ModelError(
                f"no {settings.tier} tier among the {mode} models in {folder} (found: {have}); "
                f"use --tier auto or one of {have}"
            )
        return {settings.tier: found[settings.tier]}
    return found


def _other(folder: Path, mode: str) -> Path | None:
    """A model of ``mode`` to suggest in the scale-mismatch message."""
    try:
        found = find_models(folder, mode=mode)
    except OSError:
        return None
    return next(iter(found.values())).path if found else None


class TieredEngine:
    """The engine in use plus the faster tiers to step down to (a pipeline ``Processor``).

    Everything an :class:`~sharpcam.engine.Engine` has is read from the current one. With
    ``fps`` and ``live``, an :class:`~sharpcam.tiers.OverrunMonitor` watches the model
    time and, after a sustained overrun, the next tier takes over; :attr:`status_note`
    says so for the status line. ``process`` may be called from several threads at once
    (a relay's workers): the overrun bookkeeping and the step-down hold a lock.
    """

    def __init__(
        self,
        ladder: Sequence[Engine],
        *,
        fps: float | None = None,
        live: bool = False,
        reason: str = "",
        after_ms: float = 0.0,
        clock: Any = time.monotonic,
    ) -> None:
        if not ladder:
            raise ValueError("no engines")
        self._ladder = list(ladder)
        self._current = self._ladder[0]
        self._monitor = OverrunMonitor(fps) if fps and live and len(ladder) > 1 else None
        self._clock = clock
        self._lock = threading.Lock()
        self.after_ms = after_ms
        """Time spent on each frame after the model (the stabilizer), counted as the
        model's in the overrun check."""
        self.reason = reason
        """Why this tier was chosen (the start-up line)."""
        self.status_note = ""
        """Empty, or what changed during the run (``"tier fast (stepped down ...)"``)."""

    @property
    def current(self) -> Engine:
        return self._current

    @property
    def tier(self) -> str:
        return self._current.info.tier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)

    def process(
        self, frame: np.ndarray, *, bgr: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`Engine.process` on the current tier, then the overrun check."""
        engine = self._current
        result = engine.process(frame, bgr=bgr, out=out)
        if self._monitor is not None:
            with self._lock:
                # a frame of a tier already left behind says nothing about the current one
                if (
                    self._monitor is not None
                    and engine is self._current
                    and self._monitor.observe(self._clock(), engine.last_ms + self.after_ms)
                ):
                    self._step_down()
        return result

    def _step_down(self) -> None:
        assert self._monitor is not None
        i = self._ladder.index(self._current)
        if i + 1 >= len(self._ladder):
            return
        was, avg = self._current, self._monitor.average_ms
        self._current = self._ladder[i + 1]
        self.status_note = (
            f"tier {self.tier} (stepped down from {was.info.tier}: {avg:.1f} ms > "
            f"{self._monitor.interval_ms:.1f} ms frame interval for "
            f"{self._monitor.sustain_s:.0f} s)"
        )
        log.warning("tier: %s", self.status_note)
        if i + 2 >= len(self._ladder):
            self._monitor = None

    def close(self) -> None:
        for engine in self._ladder:
            engine.close()


def backend_names(settings: EngineSettings) -> list[str]:
    """Backends to consider, before knowing where ONNX Runtime lands."""
    if settings.backend not in BACKEND_CHOICES:
        raise ProviderError(
            f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKEND_CHOICES)}"
        )
    if settings.backend != "auto":
        return [settings.backend]
    names = ["onnxruntime"]
    if settings.provider in ("auto", "cpu") and ov_backend.available():
        names.append("openvino")
    return names


def _open(info: ModelInfo, backend: str, settings: EngineSettings) -> Engine:
    return Engine(
        info.path,
        backend=backend,
        provider=settings.provider,
        threads=settings.threads,
        upscale=settings.upscale,
    )


class _ProviderLineOnce(logging.Filter):
    """Drops a ``provider: ...`` line already said during one :func:`open_engine` (it opens
    an engine per tier and backend, and each would say the same line)."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        line = record.getMessage()
        if not line.startswith("provider: "):
            return True
        fresh = line not in self.said
        self.said.add(line)
        return fresh


def open_engine(
    settings: EngineSettings = EngineSettings(),
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    live: bool = False,
) -> TieredEngine:
    """The engine ``settings`` ask for, chosen for ``width x height`` frames at ``fps``.

    Without a size nothing is timed: the best tier asked for runs on the first backend
    (ONNX Runtime), or on OpenVINO when the probe cache says it was faster at that size.

    Raises:
        ModelError, ProviderError: as :class:`~sharpcam.engine.Engine`, and
        :func:`resolve_models`.
    """
    once = _ProviderLineOnce()
    engine_log = logging.getLogger("sharpcam.engine")
    engine_log.addFilter(once)
    try:
        return _open_engine(settings, width=width, height=height, fps=fps, live=live)
    finally:
        engine_log.removeFilter(once)


def _open_engine(
    settings: EngineSettings,
    *,
    width: int | None,
    height: int | None,
    fps: float | None,
    live: bool,
) -> TieredEngine:
    tiers = resolve_models(settings)
    names = backend_names(settings)
    first = _open(next(iter(tiers.values())), names[0], settings)
    if first.device == "gpu":
        names = names[:1]
    variants = [(info, name) for info in tiers.values() for name in names]
    if settings.backend in ("auto", "openvino"):
        for info in tiers.values():
            if (twin := int8_twin(info)) is not None and "openvino" in names:
                variants.append((twin, "openvino"))
    if len(variants) == 1 or width is None or height is None:
        why = (
            "nothing to time: no frame size given"
            if len(variants) > 1
            else "--model"
            if settings.model
            else "asked"
            if settings.tier != "auto"
            else f"the only {first.info.mode} model"
        )
        reason = f"{first.info.tier} on {first.describe()} ({why})"
        log.info("tier: %s", reason)
        return TieredEngine([first], fps=fps, live=live, reason=reason)
    cache = ProbeCache(settings.cache)
    after = blend_ms(width, height, first.info.scale) if settings.stabilize else 0.0
    engines: dict[tuple[Path, str], Engine] = {(first.model_path, names[0]): first}
    measured: list[Variant] = []
    try:
        for info, name in variants:
            key = (info.path, name)
            if key not in engines:
                try:
                    engines[key] = _open(info, name, settings)
                except (ModelError, ProviderError) as exc:
                    log.debug("tier: %s on %s skipped: %s", info.path.name, name, exc)
                    continue
            engine = engines[key]
            ms = cache.measure(engine, engine.describe(), width, height, seconds=probe_seconds())
            measured.append(Variant(info.tier, engine.describe(), ms + after, info.path))
        choice = choose(measured, fps)
        reason = choice.reason
        if after:
            reason += f"; each time includes {after:.1f} ms of stabilizer"
        chosen = _ladder(choice, measured, engines)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    for engine in engines.values():
        if engine not in chosen:
            engine.close()
    log.info("tier: %s", reason)
    return TieredEngine(chosen, fps=fps, live=live, reason=reason, after_ms=after)


def _ladder(
    choice: Choice,
    measured: Sequence[Variant],
    engines: dict[tuple[Path, str], Engine],
) -> list[Engine]:
    """The chosen engine, then the fastest variant of each faster tier (step-down order)."""

    def engine_of(v: Variant) -> Engine:
        for (path, _), engine in engines.items():
            if path == v.path and engine.describe() == v.backend:
                return engine
        raise KeyError(v)

    ladder = [engine_of(choice.variant)]
    tier = choice.variant.tier
    available = [v.tier for v in measured]
    while (tier := lower_tier(tier, available) or "") and tier in TIERS:
        fastest = min((v for v in measured if v.tier == tier), key=lambda v: v.ms)
        ladder.append(engine_of(fastest))
    return ladder


__all__ = [
    "TIER_CHOICES",
    "UPSCALE_CHOICES",
    "EngineSettings",
    "TieredEngine",
    "open_engine",
    "resolve_models",
]
