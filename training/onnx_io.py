"""Export students as one ONNX ensemble, following timm's recipe.

The graph holds both students and their mean (:class:`training.students.Ensemble`) and
honours the runtime's contract (:mod:`sharpcam.contract`): input ``frames`` float32
``[N, 3, H, W]`` RGB in ``[0, 1]`` with dynamic N/H/W (H and W multiples of 8), output
``sharpened`` of the same shape, clamped to ``[0, 1]``. A model of the ``x2`` mode (scale
2) has the same names with output ``[N, 3, 2H, 2W]``.

Before anything is written, ``onnx.checker`` runs a full check and ONNX Runtime's output
is compared with PyTorch's on a random and on a real input; a max abs difference above
``1e-4`` fails the export. The file is then written atomically.

``python -m training.export --run runs/x --out models/sharpcam.onnx``
(:mod:`training.export`) exports a run's best checkpoints.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from sharpcam.atomic import atomic_write_bytes
from sharpcam.contract import INPUT_NAME, MULTIPLE, OUTPUT_NAME
from training.modes import model_scale

log = logging.getLogger(__name__)

OPSET = 18
PARITY_ATOL = 1e-4


class ExportError(RuntimeError):
    """The export failed a check; nothing was written."""


@dataclass(frozen=True)
class ExportReport:
    """What the export verified."""

    path: Path
    bytes: int
    parity_random: float  # max abs difference ORT vs PyTorch
    parity_real: float | None  # None when no real input was given
    opset: int


def to_onnx(model: nn.Module, sample: torch.Tensor) -> onnx.ModelProto:
    """Trace ``model`` with dynamic batch/height/width into an ONNX model (not checked)."""
    batch = torch.export.Dim("batch")
    height = torch.export.Dim("h8", min=1, max=8192 // MULTIPLE) * MULTIPLE
    width = torch.export.Dim("w8", min=1, max=8192 // MULTIPLE) * MULTIPLE
    sink = io.StringIO()
    # The exporter narrates every pass (INFO logs, prints, warnings about torchvision):
    # keep the run's output readable; real failures still raise.
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (sample,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamo=True,
                dynamic_shapes=({0: batch, 2: height, 3: width},),
                opset_version=OPSET,
                verbose=False,
            )
    finally:
        logging.disable(logging.NOTSET)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    scale = model_scale(model)
    out_h, out_w = ("height", "width") if scale == 1 else (f"height_x{scale}", f"width_x{scale}")
    for value, (h, w) in (
        *((v, ("height", "width")) for v in proto.graph.input),
        *((v, (out_h, out_w)) for v in proto.graph.output),
    ):
        dims = value.type.tensor_type.shape.dim
        for index, name in ((0, "batch"), (2, h), (3, w)):
            dims[index].ClearField("dim_value")
            dims[index].dim_param = name
    return proto


def max_abs_diff(session: ort.InferenceSession, model: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between ONNX Runtime's and PyTorch's outputs on ``x``."""
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if got.shape != expected.shape:
        raise ExportError(f"ONNX output shape {got.shape} != PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())


def export_model(
    model: nn.Module,
    path: Path,
    *,
    metadata: dict[str, str],
    real_input: torch.Tensor | None = None,
    atol: float = PARITY_ATOL,
) -> ExportReport:
    """Export, check and atomically write ``model`` to ``path``.

    Args:
        model: ``(N,3,H,W) -> (N,3,sH,sW)`` module (e.g. an :class:`Ensemble`) of scale
            ``s`` 1 or 2 (:func:`training.modes.model_scale`), moved to CPU.
        path: destination ``.onnx`` file.
        metadata: key -> value strings stored as ONNX ``metadata_props``.
        real_input: a real degraded ``(1,3,H,W)`` frame in ``[0,1]`` (H, W multiples of 8)
            for the second parity check; a random one is always checked.
        atol: the largest max-abs difference accepted.

    Raises:
        ExportError: the checker, or a parity check, failed. Nothing is written then.
    """
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.rand(2, 3, 64, 96, generator=generator)
    proto = to_onnx(model, sample)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "sharpcam training.export"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the graph: {exc}") from exc
    data = proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    diff_random = max_abs_diff(session, model, torch.rand(1, 3, 136, 200, generator=generator))
    diff_real = max_abs_diff(session, model, real_input) if real_input is not None else None
    for what, diff in (("random", diff_random), ("real", diff_real)):
        if diff is not None and not diff <= atol:
            raise ExportError(
                f"ONNX Runtime differs from PyTorch by {diff:.2e} on the {what} input "
                f"(allowed {atol:.0e}): the export is wrong, nothing was written"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    log.info(
        "exported %s (%.1f kB); ORT vs PyTorch max abs diff %.1e random, %s real",
        path,
        len(data) / 1e3,
        diff_random,
        "no" if diff_real is None else f"{diff_real:.1e}",
    )
    return ExportReport(path, len(data), diff_random, diff_real, OPSET)


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
