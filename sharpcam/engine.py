"""Run a sharpcam ONNX model on single frames, with ONNX Runtime or OpenVINO.

>>> engine = Engine("models/sharpcam.onnx")            # doctest: +SKIP
>>> engine.provider                                    # doctest: +SKIP
'cpu'
>>> sharp = engine.process(rgb)  # HxWx3 uint8 RGB in, (sH)x(sW)x3 out   # doctest: +SKIP

The backend (:mod:`sharpcam.backends`) opens the model and owns the session; the engine
checks frames, plans buffers per frame size and times each call. ``backend="onnxruntime"``
(the default here) picks TensorRT, CUDA or CPU (:mod:`sharpcam.backends.onnxruntime`);
``backend="openvino"`` compiles the same ONNX for the CPU with bf16/int8 where the CPU has
them (:mod:`sharpcam.backends.openvino`). Choosing between backends and tiers by
measurement is :mod:`sharpcam.runtime`'s job.

Frames of any size work: they are reflect-padded to a multiple of 8 and cropped back
(``scale`` times the frame size for a ×2 model, whose ``sharpcam.scale`` metadata says
so); buffers are re-made only when the size changes, so a steady stream allocates nothing
on the model side but the returned frame.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from sharpcam.backends import BACKENDS
from sharpcam.backends.onnxruntime import (
    GRAPH_IO_PROVIDERS,
    IO_CHOICES,
    PROVIDER_CHOICES,
    PROVIDERS,
    TRT_PROFILE,
    OrtBackend,
    gpu_present,
    short_skip_note,
    skip_reason,
)
from sharpcam.contract import default_model_path as _default_model_path
from sharpcam.errors import ModelError, ProviderError
from sharpcam.frames import check_frame
from sharpcam.machine import cache_dir, cpu_count
from sharpcam.models import ModelInfo, info_from_metadata, scale_problem

__all__ = [
    "GRAPH_IO_PROVIDERS",
    "IO_CHOICES",
    "MAKE_MODEL_HINT",
    "PROVIDERS",
    "PROVIDER_CHOICES",
    "TRT_PROFILE",
    "Engine",
    "cache_dir",
    "cpu_count",
    "gpu_present",
    "short_skip_note",
    "skip_reason",
]

log = logging.getLogger(__name__)

#: How to make the default model when it is missing (quoted in error messages).
MAKE_MODEL_HINT = "pass --model PATH, or make one with `python -m training.distill`"


class Engine:
    """One model on one backend; sharpens (or upscales) single frames.

    Args:
        model: path to an ONNX file meeting :mod:`sharpcam.contract`;
            ``None`` means :func:`sharpcam.contract.default_model_path`.
        provider: ONNX Runtime's ``"auto"`` (TensorRT, then CUDA, then CPU),
            ``"tensorrt"``, ``"cuda"`` or ``"cpu"``.
        threads: CPU threads; ``None`` = all cores.
        device_id: GPU index for TensorRT/CUDA.
        engine_cache: folder for TensorRT engine and timing caches; ``None`` =
            :func:`cache_dir`.
        io: ONNX Runtime only: ``"host"`` (OpenCV), ``"graph"`` (a uint8 NHWC wrapper
            around the model) or ``"auto"`` (graph on CUDA and CPU, host on TensorRT).
        backend: ``"onnxruntime"`` or ``"openvino"``.
        precision: OpenVINO only: ``"auto"`` (bf16 where the CPU has it), ``"f32"``, ``"bf16"``.
        upscale: the scale the caller wants (1 or 2); a model of another scale raises
            :class:`ModelError` naming the fix. ``None``: whatever the model does.

    Raises:
        ModelError: the file is missing, unreadable, corrupt, breaks the contract, or its
            scale is not ``upscale``.
        ProviderError: ``provider``/``backend`` names one that cannot run here.

    :meth:`process` is serialised by a lock, so one engine may be shared between threads
    (calls then run one at a time); give each worker its own engine for parallelism.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        provider: str = "auto",
        threads: int | None = None,
        device_id: int = 0,
        engine_cache: str | os.PathLike[str] | None = None,
        io: str = "auto",
        backend: str = "onnxruntime",
        precision: str = "auto",
        upscale: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ProviderError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        path = Path(model) if model is not None else _default_model_path()
        check_model_file(path, named=model is not None)
        self._model_path = path
        self._backend: Any
        if backend == "openvino":
            from sharpcam.backends.openvino import OvBackend

            if io not in IO_CHOICES:
                raise ValueError(f"io must be one of {', '.join(IO_CHOICES)}, got {io!r}")
            self._backend = OvBackend(path, threads=threads, precision=precision)
        else:
            cache = Path(engine_cache) if engine_cache is not None else cache_dir()
            self._backend = OrtBackend(
                path, provider=provider, threads=threads, device_id=device_id,
                engine_cache=cache, io=io,
            )  # fmt: skip
        self._info = info_from_metadata(path, self._backend.metadata)
        if upscale is not None and (problem := scale_problem(self._info, upscale)):
            raise ModelError(problem)
        self._lock = threading.Lock()
        self._plan: Any = None
        self.last_ms = 0.0
        """Milliseconds the model itself took on the last frame (session run only)."""
        self.last_host_ms = 0.0
        """Milliseconds of host-side work on the last frame: conversion, padding, copies."""
        self.frames = 0
        """Frames processed so far."""

    # -- public API -----------------------------------------------------------------------

    @property
    def provider(self) -> str:
        """Where it runs: ONNX Runtime's ``"tensorrt"``, ``"cuda"`` or ``"cpu"``;
        ``"cpu"`` for OpenVINO."""
        return str(self._backend.provider)

    @property
    def backend(self) -> str:
        """``"onnxruntime"`` or ``"openvino"``."""
        return str(self._backend.name)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return str(self._backend.device)

    @property
    def precision(self) -> str:
        """What the backend computes in (``"fp32"``, ``"fp16"``, ``"bf16"``, ``"+ int8"``)."""
        return str(self._backend.precision)

    @property
    def skipped(self) -> dict[str, str]:
        """ONNX Runtime providers tried and not used, each with the reason."""
        return dict(getattr(self._backend, "skipped", {}))

    @property
    def model_path(self) -> Path:
        """The ONNX file this engine runs."""
        return self._model_path

    @property
    def info(self) -> ModelInfo:
        """Mode, scale, tier and cost of the model (from its metadata)."""
        return self._info

    @property
    def scale(self) -> int:
        """Output size over input size: 1, or 2 for a ×2 model."""
        return self._info.scale

    @property
    def io(self) -> str:
        """Where frames are converted: ``"host"`` or ``"graph"``."""
        return str(self._backend.io)

    @property
    def session(self) -> Any:
        """The ONNX Runtime session that runs the frames (for benchmarks and inspection):
        with ``io="graph"`` the uint8 wrapper's. ONNX Runtime backend only."""
        return self._backend.session

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        return dict(self._backend.metadata)

    def describe(self) -> str:
        """``"onnxruntime cpu fp32"``-style words for logs and tables."""
        if self.backend == "openvino":
            return f"openvino {self.precision}"
        return f"onnxruntime {self.provider}"

    def process(
        self, frame: np.ndarray, *, bgr: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Sharpen one frame (and upscale it for a ×2 model).

        Args:
            frame: ``HxWx3 uint8``, RGB (or BGR with ``bgr=True``), any H, W ≥ 1.
            bgr: input and output are in OpenCV's BGR order.
            out: optional C-contiguous ``(sH)x(sW)x3 uint8`` array to write the result into.

        Returns:
            ``(sH)x(sW)x3 uint8`` (``s`` = :attr:`scale`) in the same colour order: ``out``
            if given, else a new array.

        Raises:
            TypeError: ``frame`` is not a uint8 numpy array.
            ValueError: ``frame`` is not ``HxWx3``.
            ModelError: the model failed on it (say, its output is not the size its
                scale says).
        """
        check_frame(frame)
        if not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame)
        with self._lock:
            plan = self._plan
            if plan is None or plan.size != frame.shape[:2]:
                if plan is not None:
                    log.debug(
                        "frame size changed to %dx%d: re-planning", frame.shape[1], frame.shape[0]
                    )
                try:
                    plan = self._plan = self._backend.plan(
                        frame.shape[0], frame.shape[1], self.scale
                    )
                except ModelError as exc:
                    raise ModelError(
                        f"model {self._model_path} failed on a {frame.shape[1]}x"
                        f"{frame.shape[0]} frame: {exc}"
                    ) from exc
            t0 = time.perf_counter()
            plan.load(frame, bgr=bgr)
            t1 = time.perf_counter()
            try:
                plan.execute()
            except Exception as exc:  # e.g. a graph whose output size is not its scale's
                raise ModelError(
                    f"model {self._model_path} failed on a {frame.shape[1]}x{frame.shape[0]} "
                    f"frame: {self._backend.run_failure(exc, self.scale)}"
                ) from exc
            t2 = time.perf_counter()
            if not plan.finite():  # the uint8 conversion would turn them into black
                raise ModelError(
                    f"model {self._model_path} output NaN or Inf on frame {self.frames + 1} "
                    f"({frame.shape[1]}x{frame.shape[0]}); the model is broken: re-export it "
                    "or pass another --model"
                )
            result = plan.unload(out, bgr=bgr)
            t3 = time.perf_counter()
            self.last_ms = (t2 - t1) * 1e3
            self.last_host_ms = (t1 - t0 + t3 - t2) * 1e3
            self.frames += 1
        return result

    def warmup(self, height: int = 720, width: int = 1280) -> None:
        """Run one black frame of this size (TensorRT builds or loads its engine here)."""
        self.process(np.zeros((height, width, 3), np.uint8))

    def close(self) -> None:
        """Release the session's buffers (the engine is unusable afterwards)."""
        with self._lock:
            self._plan = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        path = str(self._model_path)
        return f"Engine({path!r}, backend={self.backend!r}, provider={self.provider!r})"


def check_model_file(path: Path, *, named: bool) -> None:
    """Raise :class:`ModelError` with a fix if ``path`` is not a readable file."""
    if not path.exists():
        hint = "pass another --model PATH" if named else MAKE_MODEL_HINT
        raise ModelError(f"model file {path} does not exist; {hint}")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file; pass the .onnx file with --model PATH")
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except OSError as exc:
        raise ModelError(
            f"cannot read model file {path}: {exc.strerror}; check its permissions"
        ) from exc
    if not head:
        raise ModelError(f"model file {path} is empty; re-export it or pass another --model")
