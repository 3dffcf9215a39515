"""The OpenVINO backend: the same ONNX file, compiled for the CPU by OpenVINO.

OpenVINO reads the model with the same rounding tail as ONNX Runtime's uint8 wrapper
(:func:`~sharpcam.uint8_io.uint8_wrapper`, ``layout=False``), so both backends round
alike, and the whole call, conversion included, runs inside the compiled graph. The
uint8 casts and the NHWC <-> NCHW changes are OpenVINO preprocessing steps rather than
graph nodes: the CPU plugin folds them into the layout reorders it makes anyway. At 720p
that took the fast restore tier's whole call to 0.87x of its time with the wrapper's Cast
and Transpose nodes, bit-identical output (a scratch interleaved timing, 25 calls each, on
the 2-core AVX2 machine of 2026-12-08; `sharpcam bench` has no row for the old way).

The model is compiled for each frame size (static shapes run faster on the CPU plugin; a
size change costs one compile, tens of milliseconds for sharpcam's models).

Precision (``precision="auto"``): bf16 where the CPU plugin lists ``BF16`` among its
``OPTIMIZATION_CAPABILITIES`` (AMX or AVX-512 BF16 units), else fp32. A quantized (QDQ)
model, e.g. ``*.int8.onnx``, runs its int8 convolutions as int8 whatever the hint.
Threads: ``INFERENCE_NUM_THREADS`` and the latency hint (one stream), so it never takes
more cores than asked for.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from sharpcam.backends.onnxruntime import needs_size
from sharpcam.contract import contract_problem
from sharpcam.errors import ModelError, ProviderError, one_line
from sharpcam.machine import cpu_count
from sharpcam.uint8_io import Uint8Buffers, uint8_wrapper

log = logging.getLogger("sharpcam.engine")

NAME = "openvino"
PRECISIONS = ("auto", "f32", "bf16")


def available() -> bool:
    """Whether the ``openvino`` package is installed."""
    return importlib.util.find_spec("openvino") is not None


def cpu_has_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin says this CPU computes in bf16 natively."""
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an old plugin without the property: assume not
        return False


class _Port:
    """An OpenVINO port seen as :class:`sharpcam.contract.TensorInfo`."""

    def __init__(self, port: Any) -> None:
        self.name = port.get_any_name()
        self.type = _onnx_type(port.get_element_type())
        self.shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _onnx_type(element_type: Any) -> str:
    name = getattr(element_type, "get_type_name", lambda: str(element_type))()
    return {"f32": "tensor(float)", "f16": "tensor(float16)", "u8": "tensor(uint8)"}.get(
        name, f"tensor({name})"
    )


class OvPlan(Uint8Buffers):
    """The model compiled for one frame size, with an infer request reading and writing
    the reused uint8 buffers in place."""

    def __init__(self, compiled: Any, height: int, width: int, scale: int) -> None:
        import openvino as ov

        super().__init__(height, width, scale)
        got = tuple(compiled.outputs[0].get_shape())  # outputs[1]: the NaN/Inf check
        if got != self.output.shape:
            raise ModelError(
                f"its output is {got[2]}x{got[1]} for a {self.input.shape[2]}x"
                f"{self.input.shape[1]} input; {needs_size(scale)}"
            )
        self.request = compiled.create_infer_request()
        self.request.set_input_tensor(ov.Tensor(self.input, shared_memory=True))
        self.request.set_output_tensor(0, ov.Tensor(self.output, shared_memory=True))
        self.request.set_output_tensor(1, ov.Tensor(self.check, shared_memory=True))

    def execute(self) -> None:
        self.request.infer()


class OvBackend:
    """One model on OpenVINO's CPU plugin.

    Args:
        path: the ONNX file (already checked to exist).
        threads: inference threads; ``None`` = all cores.
        precision: ``"auto"`` (bf16 where the CPU has it), ``"f32"`` or ``"bf16"``.

    Raises:
        ProviderError: openvino is not installed.
        ModelError: OpenVINO cannot read the file, or it breaks the contract.
    """

    name = NAME
    provider = "cpu"
    device = "cpu"
    io = "graph"

    def __init__(self, path: Path, *, threads: int | None = None, precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if not available():
            raise ProviderError(
                "the openvino backend needs the openvino package; `pip install openvino`, "
                "or use --backend onnxruntime"
            )
        import openvino as ov

        self._core = ov.Core()
        try:
            plain = self._core.read_model(str(path))
            problem = contract_problem(
                [_Port(p) for p in plain.inputs], [_Port(p) for p in plain.outputs]
            )
            if problem:
                raise ModelError(f"model {path} does not follow the sharpcam contract: {problem}")
            self._model = self._core.read_model(uint8_wrapper(path, layout=False), b"")
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"openvino cannot read model {path}: {one_line(str(exc), limit=200)}; "
                "use --backend onnxruntime or re-export it"
            ) from exc
        self.int8 = any(op.get_type_name() == "FakeQuantize" for op in plain.get_ops()) or any(
            op.get_type_name() == "QuantizeLinear" for op in plain.get_ops()
        )
        if precision == "auto":
            precision = "bf16" if cpu_has_bf16(self._core) else "f32"
        self.precision = precision + (" + int8" if self.int8 else "")
        self._config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads or cpu_count(),
            "INFERENCE_PRECISION_HINT": precision,
        }
        self._path = path
        self._meta = _metadata(path)
        self._input = self._model.inputs[0].get_any_name()

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._meta)

    def plan(self, height: int, width: int, scale: int) -> OvPlan:
        """The model compiled for frames of this size (padded to the multiple)."""
        from sharpcam.frames import padded_size

        ph, pw = padded_size(height, width)
        model = self._model.clone()
        model.reshape({self._input: [1, 3, ph, pw]})
        try:
            compiled = self._core.compile_model(_uint8_nhwc(model), "CPU", self._config)
        except Exception as exc:
            raise ModelError(
                f"openvino cannot compile {self._path} for {width}x{height} frames: "
                f"{one_line(str(exc), limit=200)}"
            ) from exc
        log.debug("openvino: compiled %s for %dx%d (%s)", self._path.name, pw, ph, self.precision)
        return OvPlan(compiled, height, width, scale)

    def run_failure(self, exc: BaseException, scale: int) -> str:
        return one_line(str(exc), limit=200)


def _uint8_nhwc(model: Any) -> Any:
    """``model`` (the ``layout=False`` wrapper) taking and giving ``[1,H,W,3] uint8``:
    the input cast and scaled to ``[0,1]``, the output (already rounded and saturated)
    cast to uint8, both laid out NHWC, by OpenVINO's pre- and postprocessing."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    steps.input().model().set_layout(ov.Layout("NCHW"))
    steps.output(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.output(0).model().set_layout(ov.Layout("NCHW"))
    return steps.build()


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
