"""The ONNX Runtime backend: provider choice, sessions and I/O binding for one model.

Provider choice (``provider="auto"``): TensorRT (fp16, engine cache in
:func:`~sharpcam.machine.cache_dir`), then CUDA, then CPU. Each candidate gets its own
session attempt; what ONNX Runtime prints while one fails (onnxruntime-gpu is loud on
machines without CUDA) is captured and boiled down to one reason, and a single log line
names the provider in use and why the others were skipped. Asking for ``tensorrt`` or
``cuda`` explicitly and not getting it raises :class:`~sharpcam.errors.ProviderError`.

Inputs and outputs are bound with ONNX Runtime's I/O binding: on CPU the model reads and
writes reused numpy buffers directly; on GPU ONNX Runtime copies exactly once each way.
Where the uint8 <-> float conversion happens is chosen per provider (``io="auto"``,
``sharpcam bench --io-compare``): on CUDA and on the CPU the graph is wrapped to take and
give uint8 NHWC frames (:mod:`sharpcam.uint8_io`); TensorRT keeps the host conversion
(:class:`~sharpcam.frames.PlanarBuffers`, also ``io="host"``): its fp16 engine is built
for the float contract and was not measured with the wrapper.
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sharpcam.contract import INPUT_NAME, MULTIPLE, OUTPUT_NAME, contract_problem
from sharpcam.errors import ModelError, ProviderError, one_line
from sharpcam.frames import PlanarBuffers
from sharpcam.machine import cpu_count
from sharpcam.uint8_io import Uint8Plan, uint8_wrapper

log = logging.getLogger("sharpcam.engine")

NAME = "onnxruntime"

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

    def __init__(
        self, session: ort.InferenceSession, height: int, width: int, scale: int = 1
    ) -> None:
        self.session = session
        self.buffers = PlanarBuffers(height, width, MULTIPLE, scale)
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

    def execute(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def finite(self) -> bool:
        """Whether the last output was free of NaN and Inf (their sum is finite)."""
        return bool(np.isfinite(self.buffers.output.sum(dtype=np.float32)))


class OrtBackend:
    """One ONNX Runtime session for one model file.

    Args:
        path: the ONNX file (already checked to exist).
        provider: ``"auto"``, ``"tensorrt"``, ``"cuda"`` or ``"cpu"``.
        threads: intra-op threads; ``None`` = all cores.
        device_id: GPU index for TensorRT/CUDA.
        engine_cache: folder for TensorRT engine and timing caches.
        io: ``"host"``, ``"graph"`` or ``"auto"``.

    Raises:
        ModelError: the file is corrupt or breaks the contract.
        ProviderError: ``provider`` cannot run here.
    """

    name = NAME

    def __init__(
        self,
        path: Path,
        *,
        provider: str = "auto",
        threads: int | None = None,
        device_id: int = 0,
        engine_cache: Path,
        io: str = "auto",
    ) -> None:
        if io not in IO_CHOICES:
            raise ValueError(f"io must be one of {', '.join(IO_CHOICES)}, got {io!r}")
        if provider not in PROVIDER_CHOICES:
            raise ProviderError(
                f"unknown provider {provider!r}; choose one of {', '.join(PROVIDER_CHOICES)}"
            )
        self._model_path = path
        self._cache = engine_cache
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
        self._graph = io == "graph" or (io == "auto" and self._provider in GRAPH_IO_PROVIDERS)
        if self._graph:
            # The float session has done its job (provider choice, contract check); do not
            # keep a second copy of the model and its arena (GPU memory on CUDA) alive.
            self._session = ort.InferenceSession(
                uint8_wrapper(path),
                sess_options=self._options,
                providers=_provider_chain(self._provider, device_id, self._cache),
            )

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

    @property
    def provider(self) -> str:
        """The provider in use: ``"tensorrt"``, ``"cuda"`` or ``"cpu"``."""
        return self._provider

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return "cpu" if self._provider == "cpu" else "gpu"

    @property
    def precision(self) -> str:
        """Arithmetic the provider runs the model in."""
        return "fp16" if self._provider == "tensorrt" else "fp32"

    @property
    def io(self) -> str:
        return "graph" if self._graph else "host"

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def plan(self, height: int, width: int, scale: int) -> _Plan | Uint8Plan:
        """Buffers and binding for frames of this size."""
        if self._graph:
            return Uint8Plan(self._session, height, width, scale)
        return _Plan(self._session, height, width, scale)

    def run_failure(self, exc: BaseException, scale: int) -> str:
        """Why a run failed, in a few words."""
        return _run_failure(exc, scale)


def _short_name(ort_name: str) -> str | None:
    return next((k for k, v in PROVIDERS.items() if v == ort_name), None)


def _ort_message(exc: BaseException) -> str:
    """ONNX Runtime's message without its ``[ONNXRuntimeError] : 7 : CODE :`` prefix."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    return one_line(re.sub(r"/onnxruntime_src/\S+ ", "", text), limit=200).rstrip(".")


def _run_failure(exc: BaseException, scale: int = 1) -> str:
    """Why a session run failed, in a few words."""
    text = str(exc)
    m = re.search(
        r"has shape \{([\d,]+)\} but the computed output shape for this run is \{([\d,]+)\}", text
    )
    if m:
        want, got = (_width_height(g) for g in m.groups())
        if scale == 1:  # the bound output is the input's size
            return f"its output is {got} for a {want} input; {needs_size(scale)}"
        return f"its output is {got}, not {want}; {needs_size(scale)}"
    text = re.sub(r"^.*?Status Message: ", "", _ort_message(exc))
    return one_line(text, limit=200)


def needs_size(scale: int) -> str:
    """What the contract says of the output size for a model of ``scale``."""
    if scale == 1:
        return "the contract needs the output the same size as the input"
    return f"the contract of a ×{scale} model needs the output {scale} times the input's size"


def _width_height(shape: str) -> str:
    """``"1,3,48,64"`` (NCHW) or ``"1,48,64,3"`` (NHWC, the uint8 wrapper) as ``"64x48"``."""
    dims = [int(v) for v in shape.split(",")]
    if len(dims) == 4 and dims[1] != 3 and dims[3] == 3:
        return f"{dims[2]}x{dims[1]}"
    return f"{dims[-1]}x{dims[-2]}"
