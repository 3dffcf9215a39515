"""Run a sharpcam ONNX model on single frames with ONNX Runtime.

>>> engine = Engine("models/sharpcam.onnx")            # doctest: +SKIP
>>> engine.provider                                    # doctest: +SKIP
'cpu'
>>> sharp = engine.process(rgb)  # HxWx3 uint8 RGB in, same shape out   # doctest: +SKIP

Provider choice (``provider="auto"``): TensorRT (fp16, engine cache in :func:`cache_dir`),
then CUDA, then CPU. Each candidate gets its own session attempt; what ONNX Runtime prints
while one fails (onnxruntime-gpu is loud on machines without CUDA) is captured and boiled
down to one reason, and a single log line names the provider in use and why the others
were skipped. Asking for ``tensorrt`` or ``cuda`` explicitly and not getting it raises
:class:`~sharpcam.errors.ProviderError` instead.

Frames of any size work: they are reflect-padded to a multiple of 8 and cropped back;
buffers and the I/O binding are re-made only when the size changes, so a steady stream
allocates nothing on the model side but the returned frame. Inputs and outputs are bound
with ONNX Runtime's I/O binding: on CPU the model reads and writes the reused numpy buffers
directly; on GPU ONNX Runtime copies exactly once each way.

Where the uint8 <-> float conversion happens is chosen per provider by measurement
(``io="auto"``, ``sharpcam bench --io-compare``): on CUDA and on the CPU the graph is
wrapped to take and give uint8 NHWC frames (:mod:`sharpcam.uint8_io`). On an H100 that
moves 4x fewer bytes and halved the host's share of a frame; on a 2-core CPU the two are a
tie (graph/host 0.98-1.01 per frame), and the graph gives CPU and CUDA one code path and the
same rounding. TensorRT keeps the host conversion (:class:`~sharpcam.frames.PlanarBuffers`,
also ``io="host"``): its fp16 engine is built for the float contract and was not measured
with the wrapper.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import onnxruntime as ort

from sharpcam.contract import INPUT_NAME, MULTIPLE, OUTPUT_NAME, contract_problem
from sharpcam.contract import default_model_path as _default_model_path
from sharpcam.errors import ModelError, ProviderError, one_line
from sharpcam.frames import PlanarBuffers, check_frame
from sharpcam.uint8_io import Uint8Plan, uint8_wrapper

log = logging.getLogger(__name__)

#: Our short names for ONNX Runtime's execution providers, in ``auto``'s order of preference.
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PROVIDER_CHOICES = ("auto", *PROVIDERS)

#: The TensorRT optimisation profile: smallest, typical and largest frame (N x 3 x H x W).
TRT_PROFILE = {"min": "1x3x8x8", "opt": "1x3x720x1280", "max": "1x3x2160x3840"}

#: ``io="auto"``: providers whose frames are converted inside the graph (measured: faster on
#: CUDA, a tie on the CPU).
GRAPH_IO_PROVIDERS = frozenset({"cuda", "cpu"})
IO_CHOICES = ("auto", "host", "graph")

#: How to make the default model when it is missing (quoted in error messages).
MAKE_MODEL_HINT = "pass --model PATH, or make one with `python -m training.distill`"


def cache_dir() -> Path:
    """Where TensorRT engines are cached: ``$SHARPCAM_CACHE``, else
    ``$XDG_CACHE_HOME/sharpcam``, else ``~/.cache/sharpcam`` (not created here)."""
    if env := os.environ.get("SHARPCAM_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sharpcam"


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Capture what ONNX Runtime prints while the block runs: its native logger writes to
    file descriptor 2, its Python fallback code ``print``s to ``sys.stdout``. Yields a list
    that holds the captured text once the block has ended."""
    captured: list[str] = []
    with tempfile.TemporaryFile() as tmp, contextlib.redirect_stdout(io.StringIO()) as py_out:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (e.g. pythonw): nothing native to capture
            saved = -1
        if saved >= 0:
            os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            if saved >= 0:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))
            captured.append(py_out.getvalue())


_REASONS = (
    # (pattern, how to word it): the first that matches wins.
    (re.compile(r"(\S+?\.so[.\d]*): cannot open shared object file"), "needs {0}, not found"),
    (re.compile(r"cannot load library[^\n]*?(\S+\.dll)", re.I), "needs {0}, not found"),
    (re.compile(r"(CUDA failure \d+: [^;\n]+)"), "{0}"),
    (re.compile(r"(no CUDA-capable device[^;\n]*)", re.I), "{0}"),
    (re.compile(r"(Require cuDNN [^.]+\.\*? and CUDA [\d.*]+)"), "{0}"),
)


def skip_reason(text: str) -> str:
    """Boil what ONNX Runtime printed (or raised) while a provider failed down to a few words.

    >>> skip_reason("Failed to load library libonnxruntime_providers_cuda.so with error: "
    ...             "libcublasLt.so.13: cannot open shared object file: No such file")
    'needs libcublasLt.so.13, not found'
    """
    flat = one_line(text, limit=10_000)
    for pattern, wording in _REASONS:
        if m := pattern.search(flat):
            return wording.format(*m.groups())
    # Else the first logged or raised message, without the logger's prefix and source path.
    flat = re.sub(r"\S*\[[EWF]:onnxruntime:[^\]]*\]\s*", "", flat)
    flat = re.sub(r"/onnxruntime_src/\S+\s+(\S+ )*?\S+\)\s*", "", flat)
    return one_line(flat, limit=160) or "not usable (no reason given)"


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU with its driver loaded (a cheap look at the
    driver's device files on Linux, else ``nvidia-smi`` on the PATH)."""
    if sys.platform.startswith("linux"):
        return any(Path("/dev").glob("nvidia[0-9]*"))
    return shutil.which("nvidia-smi") is not None


def short_skip_note(skipped: dict[str, str], gpu: bool) -> str:
    """Why the providers in ``skipped`` were not used, in a few words for the provider line.

    >>> short_skip_note({"cuda": "needs libcublasLt.so.13, not found"}, gpu=False)
    'no CUDA GPU'
    >>> short_skip_note({"tensorrt": "needs libnvinfer.so.10, not found"}, gpu=True)
    'tensorrt: libraries not found, -v names them'
    """
    if not skipped:
        return ""
    if not gpu:
        return "no CUDA GPU"
    return "; ".join(
        f"{name}: " + ("libraries not found, -v names them" if why.startswith("needs lib") else why)
        for name, why in skipped.items()
    )


def _is_model_problem(exc: BaseException) -> bool:
    """Whether an exception from creating a session is about the model file, not the
    provider (ONNX Runtime raises these when parsing or checking the graph)."""
    names = {"InvalidProtobuf", "InvalidGraph", "NoSuchFile", "InvalidArgument", "NotImplemented"}
    return type(exc).__name__ in names or "Load model from" in str(exc)


def _provider_options(name: str, device_id: int, cache: Path) -> dict[str, object]:
    if name == "tensorrt":
        return {
            "device_id": device_id,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": f"{INPUT_NAME}:{TRT_PROFILE['min']}",
            "trt_profile_opt_shapes": f"{INPUT_NAME}:{TRT_PROFILE['opt']}",
            "trt_profile_max_shapes": f"{INPUT_NAME}:{TRT_PROFILE['max']}",
        }
    if name == "cuda":
        return {"device_id": device_id, "cudnn_conv_use_max_workspace": "1"}
    return {}


def _provider_chain(name: str, device_id: int, cache: Path) -> list[tuple[str, dict[str, object]]]:
    """What to hand ONNX Runtime for ``name``: the provider, then those that take the nodes
    it cannot run (TensorRT leaves some to CUDA; every GPU provider leaves some to CPU)."""
    order = list(PROVIDERS)[list(PROVIDERS).index(name) :]
    return [(PROVIDERS[n], _provider_options(n, device_id, cache)) for n in order]


class _Plan:
    """Float buffers (host conversion) and I/O binding for one frame size."""

    def __init__(self, session: ort.InferenceSession, height: int, width: int) -> None:
        self.session = session
        self.buffers = PlanarBuffers(height, width, MULTIPLE)
        self.binding = session.io_binding()
        self.binding.bind_cpu_input(INPUT_NAME, self.buffers.input)
        out = self.buffers.output
        self.binding.bind_output(
            OUTPUT_NAME, "cpu", 0, np.float32, list(out.shape), out.ctypes.data
        )

    @property
    def size(self) -> tuple[int, int]:
        return self.buffers.size

    def load(self, frame: np.ndarray, *, bgr: bool = False) -> None:
        self.buffers.load(frame, bgr=bgr)

    def unload(self, out: np.ndarray | None = None, *, bgr: bool = False) -> np.ndarray:
        return self.buffers.unload(out, bgr=bgr)

    def finite(self) -> bool:
        """Whether the last output was free of NaN and Inf (their sum is finite)."""
        return bool(np.isfinite(self.buffers.output.sum(dtype=np.float32)))


class Engine:
    """One ONNX Runtime session for one sharpcam model; sharpens single frames.

    Args:
        model: path to an ONNX file meeting :mod:`sharpcam.contract`;
            ``None`` means :func:`sharpcam.contract.default_model_path`.
        provider: ``"auto"`` (TensorRT, then CUDA, then CPU), ``"tensorrt"``, ``"cuda"``
            or ``"cpu"``.
        threads: CPU threads for ONNX Runtime's intra-op pool; ``None`` = all cores.
        device_id: GPU index for TensorRT/CUDA.
        engine_cache: folder for TensorRT engine and timing caches; ``None`` =
            :func:`cache_dir`.
        io: where frames are converted: ``"host"`` (OpenCV), ``"graph"`` (a uint8 NHWC
            wrapper around the model) or ``"auto"`` (graph on CUDA and CPU, host on
            TensorRT).

    Raises:
        ModelError: the file is missing, unreadable, corrupt, or breaks the contract.
        ProviderError: ``provider`` names one that cannot run here, or an unknown name.

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
    ) -> None:
        if io not in IO_CHOICES:
            raise ValueError(f"io must be one of {', '.join(IO_CHOICES)}, got {io!r}")
        if provider not in PROVIDER_CHOICES:
            raise ProviderError(
                f"unknown provider {provider!r}; choose one of {', '.join(PROVIDER_CHOICES)}"
            )
        path = Path(model) if model is not None else _default_model_path()
        _check_model_file(path, named=model is not None)
        self._model_path = path
        self._cache = Path(engine_cache) if engine_cache is not None else cache_dir()
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.intra_op_num_threads = threads or cpu_count()
        # No spin-waiting between runs: sharpcam shares the CPU with its own capture,
        # decode and encode threads and with the video-call app it feeds.
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Fatal only: provider failures are captured and run failures raised as ModelError.
        self._options.log_severity_level = 2 if log.isEnabledFor(logging.DEBUG) else 4
        self._device_id = device_id
        self.skipped: dict[str, str] = {}
        """Providers tried and not used, each with the reason (``{"cuda": "needs ..."}``)."""
        self._session, self._provider = self._open(provider)
        problem = contract_problem(self._session.get_inputs(), self._session.get_outputs())
        if problem:
            raise ModelError(f"model {path} does not follow the sharpcam contract: {problem}")
        self._graph_session: ort.InferenceSession | None = None
        if io == "graph" or (io == "auto" and self._provider in GRAPH_IO_PROVIDERS):
            self._graph_session = ort.InferenceSession(
                uint8_wrapper(path),
                sess_options=self._options,
                providers=_provider_chain(self._provider, device_id, self._cache),
            )
            # The float session has done its job (provider choice, contract check); do not
            # keep a second copy of the model and its arena (GPU memory on CUDA) alive.
            self._session = self._graph_session
        self._lock = threading.Lock()
        self._plan: _Plan | Uint8Plan | None = None
        self.last_ms = 0.0
        """Milliseconds the model itself took on the last frame (session run only)."""
        self.last_host_ms = 0.0
        """Milliseconds of host-side work on the last frame: conversion, padding, copies."""
        self.frames = 0
        """Frames processed so far."""

    # -- provider selection -------------------------------------------------------------

    def _open(self, requested: str) -> tuple[ort.InferenceSession, str]:
        available = set(ort.get_available_providers())
        candidates = list(PROVIDERS) if requested == "auto" else [requested]
        for name in candidates:
            if name in self.skipped:
                continue
            if PROVIDERS[name] not in available:
                self.skipped[name] = "not in this onnxruntime build (needs onnxruntime-gpu)"
                continue
            session, reason = self._try(name)
            got = _short_name(session.get_providers()[0]) if session is not None else None
            if session is not None and got == name:
                self._log_choice(name)
                return session, name
            self.skipped[name] = reason
            if session is not None and got is not None and requested == "auto":
                # The attempt fell back by itself (TensorRT to CUDA, CUDA to CPU): every
                # provider above the one it landed on failed, and that one works.
                for above in candidates[candidates.index(name) + 1 : candidates.index(got)]:
                    self.skipped.setdefault(above, reason)
                self._log_choice(got)
                return session, got
        why = self.skipped.get(requested, "unavailable")
        raise ProviderError(
            f"provider {requested!r} cannot run here ({why}); "
            "use --provider auto to fall back, or --provider cpu",
            reason=why,
        )

    def _log_choice(self, name: str) -> None:
        """One line: the provider and, briefly, why those above it were skipped; the
        details (library names) at debug level (``-v``)."""
        note = short_skip_note(self.skipped, gpu_present())
        log.info("provider: %s%s", name, f" ({note})" if note else "")
        if self.skipped:
            log.debug(
                "providers skipped: %s", "; ".join(f"{n}: {r}" for n, r in self.skipped.items())
            )

    def _try(self, name: str) -> tuple[ort.InferenceSession | None, str]:
        """One session attempt for provider ``name`` (with its fallbacks in the chain);
        ``(session or None, reason it is not `name`)``. Model problems raise at once."""
        chain = _provider_chain(name, self._device_id, self._cache)
        if name == "tensorrt":
            try:
                self._cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # TensorRT still runs; it rebuilds engines every start
                log.warning("cannot create engine cache %s: %s", self._cache, exc.strerror)
        with _captured_output() as printed:
            try:
                session: ort.InferenceSession | None = ort.InferenceSession(
                    str(self._model_path),
                    sess_options=self._options,
                    providers=chain,
                    enable_fallback=0,  # we fall back ourselves, keeping each provider's options
                )
                error = ""
            except Exception as exc:
                if _is_model_problem(exc):
                    raise ModelError(
                        f"cannot load model {self._model_path}: {_ort_message(exc)}; the file is "
                        "corrupt or not an ONNX model this onnxruntime can read — re-export it "
                        "or pass another --model"
                    ) from exc
                session, error = None, str(exc)
        text = "\n".join([*printed, error])
        if text.strip():
            log.debug("onnxruntime said while trying %s:\n%s", name, text)
        return session, skip_reason(text)

    # -- public API -----------------------------------------------------------------------

    @property
    def provider(self) -> str:
        """The provider in use: ``"tensorrt"``, ``"cuda"`` or ``"cpu"``."""
        return self._provider

    @property
    def model_path(self) -> Path:
        """The ONNX file this engine runs."""
        return self._model_path

    @property
    def io(self) -> str:
        """Where frames are converted: ``"host"`` or ``"graph"``."""
        return "graph" if self._graph_session is not None else "host"

    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session that runs the frames (for benchmarks and inspection):
        with ``io="graph"`` the uint8 wrapper's."""
        return self._session

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` (how it was made; for display only)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def process(
        self, frame: np.ndarray, *, bgr: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Sharpen one frame.

        Args:
            frame: ``HxWx3 uint8``, RGB (or BGR with ``bgr=True``), any H, W ≥ 1.
            bgr: input and output are in OpenCV's BGR order.
            out: optional C-contiguous ``HxWx3 uint8`` array to write the result into.

        Returns:
            ``HxWx3 uint8`` in the same colour order: ``out`` if given, else a new array.

        Raises:
            TypeError: ``frame`` is not a uint8 numpy array.
            ValueError: ``frame`` is not ``HxWx3``.
            ModelError: the model failed on it (say, its output is not the input's size).
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
                plan = self._plan = self._make_plan(frame.shape[0], frame.shape[1])
            t0 = time.perf_counter()
            plan.load(frame, bgr=bgr)
            t1 = time.perf_counter()
            try:
                plan.session.run_with_iobinding(plan.binding)
            except Exception as exc:  # e.g. a graph whose output size is not its input's
                raise ModelError(
                    f"model {self._model_path} failed on a {frame.shape[1]}x{frame.shape[0]} "
                    f"frame: {_run_failure(exc)}"
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

    def _make_plan(self, height: int, width: int) -> _Plan | Uint8Plan:
        if self._graph_session is not None:
            return Uint8Plan(self._graph_session, height, width)
        return _Plan(self._session, height, width)

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
        return f"Engine({str(self._model_path)!r}, provider={self._provider!r})"


def _short_name(ort_name: str) -> str | None:
    return next((k for k, v in PROVIDERS.items() if v == ort_name), None)


def _ort_message(exc: BaseException) -> str:
    """ONNX Runtime's message without its ``[ONNXRuntimeError] : 7 : CODE :`` prefix."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    return one_line(re.sub(r"/onnxruntime_src/\S+ ", "", text), limit=200).rstrip(".")


def _run_failure(exc: BaseException) -> str:
    """Why a session run failed, in a few words."""
    text = str(exc)
    m = re.search(
        r"has shape \{([\d,]+)\} but the computed output shape for this run is \{([\d,]+)\}", text
    )
    if m:
        want, got = (_width_height(g) for g in m.groups())
        return (
            f"its output is {got} for a {want} input; the contract "
            "needs the output the same size as the input"
        )
    text = re.sub(r"^.*?Status Message: ", "", _ort_message(exc))
    return one_line(text, limit=200)


def _width_height(shape: str) -> str:
    """``"1,3,48,64"`` (NCHW) or ``"1,48,64,3"`` (NHWC, the uint8 wrapper) as ``"64x48"``."""
    dims = [int(v) for v in shape.split(",")]
    if len(dims) == 4 and dims[1] != 3 and dims[3] == 3:
        return f"{dims[2]}x{dims[1]}"
    return f"{dims[-1]}x{dims[-2]}"


def _check_model_file(path: Path, *, named: bool) -> None:
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
