"""What a model file is (mode, scale, tier, cost) and which models ``models/`` holds.

Training writes four ``metadata_props`` at export (:data:`SCALE_KEY` and the others);
this module reads them. A file without them is what the seed shipped: scale 1, mode
``restore``, tier ``quality``.

>>> info = read_info("models/sharpcam.onnx")           # doctest: +SKIP
>>> info.mode, info.scale, info.tier
('restore', 1, 'quality')
>>> find_models("models", mode="x2")                   # doctest: +SKIP
{'fast': ModelInfo(...), 'quality': ModelInfo(...)}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from sharpcam.contract import REPO_MODEL
from sharpcam.errors import ModelError, one_line

SCALE_KEY = "sharpcam.scale"
MODE_KEY = "sharpcam.mode"
TIER_KEY = "sharpcam.tier"
MACS_KEY = "sharpcam.macs_per_pixel"

#: Modes and the output scale each has: ``restore`` sharpens a soft frame (a webcam, the
#: seed's blur), ``x2`` upscales a decoded half-size call stream, ``deblock`` cleans a
#: decoded full-size call stream of codec blocking (``--deblock``).
MODE_SCALES: dict[str, int] = {"restore": 1, "x2": 2, "deblock": 1}
#: Tiers from the best-looking to the fastest (the order ``auto`` steps down in).
TIERS = ("quality", "balanced", "fast")
TIER_CHOICES = ("auto", *TIERS)

#: The folder the runtime searches: ``$SHARPCAM_MODELS`` or the checkout's ``models/``.
REPO_MODELS = REPO_MODEL.parent


def models_dir() -> Path:
    """Where tiers are looked for: ``$SHARPCAM_MODELS`` or the shipped ``models/``."""
    env = os.environ.get("SHARPCAM_MODELS")
    return Path(env) if env else REPO_MODELS


@dataclass(frozen=True)
class ModelInfo:
    """One model file as its metadata describes it.

    Attributes:
        path: the ONNX file.
        scale: output size / input size (1 or 2).
        mode: ``"restore"`` (same size), ``"x2"`` (super-resolution) or ``"deblock"``
            (same size, codec blocking).
        tier: ``"quality"``, ``"balanced"`` or ``"fast"``.
        macs_per_pixel: multiply-adds per output pixel (``None`` when not recorded).
        int8: the graph holds quantized (QDQ) convolutions.
    """

    path: Path
    scale: int = 1
    mode: str = "restore"
    tier: str = "quality"
    macs_per_pixel: float | None = None
    int8: bool = False

    @property
    def label(self) -> str:
        """``"×1 (restore)"``-style words for messages."""
        return f"×{self.scale} ({self.mode})"


def read_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The :class:`ModelInfo` of an ONNX file (defaults where metadata is missing).

    Raises:
        ModelError: the file cannot be read as ONNX, or its metadata is malformed.
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(
            f"cannot load model {path}: {one_line(str(exc), limit=160)}; the file is corrupt "
            "or not an ONNX model — re-export it or pass another --model"
        ) from exc
    meta = {p.key: p.value for p in model.metadata_props}
    int8 = any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in model.graph.node)
    return info_from_metadata(path, meta, int8=int8)


def info_from_metadata(path: Path, meta: dict[str, str], *, int8: bool = False) -> ModelInfo:
    """:class:`ModelInfo` from a ``metadata_props`` mapping (pure; see :func:`read_info`)."""
    try:
        scale = int(meta.get(SCALE_KEY, "1"))
        macs = float(meta[MACS_KEY]) if MACS_KEY in meta else None
    except ValueError as exc:
        raise ModelError(f"model {path} has malformed sharpcam metadata: {exc}") from exc
    mode = meta.get(MODE_KEY) or ("x2" if scale == 2 else "restore")
    tier = meta.get(TIER_KEY, "quality")
    if MODE_SCALES.get(mode) != scale:
        raise ModelError(
            f"model {path} says mode {mode!r} with scale {scale}; "
            f"expected one of {', '.join(f'{m}={s}' for m, s in MODE_SCALES.items())}"
        )
    if tier not in TIERS:
        raise ModelError(f"model {path} has tier {tier!r}; expected one of {', '.join(TIERS)}")
    return ModelInfo(path, scale, mode, tier, macs, int8 or path.name.endswith(".int8.onnx"))


def mode_for_scale(scale: int) -> str:
    """``1`` → ``"restore"``, ``2`` → ``"x2"``."""
    for mode, s in MODE_SCALES.items():
        if s == scale:
            return mode
    raise ModelError(f"no mode has scale {scale}; use --upscale 1 or 2")


def asked_mode(upscale: int, deblock: bool) -> str:
    """The mode ``--upscale``/``--deblock`` ask for; :class:`ModelError` when they contradict."""
    if deblock and upscale != 1:
        raise ModelError(
            "--deblock works on the full-size stream and --upscale 2 on a half-size one: "
            "drop one (the ×2 models already clean the half-size stream's blocking)"
        )
    return "deblock" if deblock else mode_for_scale(upscale)


def scale_problem(info: ModelInfo, upscale: int, *, alternative: Path | None = None) -> str | None:
    """``None`` if ``info`` gives ``upscale``; else the one line that says what to do."""
    if info.scale == upscale:
        return None
    fix = f"use --model {alternative}" if alternative is not None else "pass a matching --model"
    drop = "drop --upscale" if info.scale == 1 else f"add --upscale {info.scale}"
    return f"{info.path} is a {info.label} model but --upscale {upscale} was asked: {fix} or {drop}"


def find_models(folder: str | os.PathLike[str] | None = None, *, mode: str) -> dict[str, ModelInfo]:
    """The models of ``mode`` in ``folder`` (default :func:`models_dir`), by tier.

    Where a tier has several files, the one without int8 comes first unless only int8
    exists; unreadable ``.onnx`` files are skipped (the runtime names them only if asked
    for explicitly with ``--model``).
    """
    root = Path(folder) if folder is not None else models_dir()
    found: dict[str, ModelInfo] = {}
    for path in sorted(root.glob("*.onnx")):
        try:
            info = read_info(path)
        except ModelError:
            continue
        if info.mode != mode:
            continue
        held = found.get(info.tier)
        if held is None or (held.int8 and not info.int8):
            found[info.tier] = info
    return {t: found[t] for t in TIERS if t in found}


def int8_twin(info: ModelInfo) -> ModelInfo | None:
    """The ``NAME.int8.onnx`` next to ``NAME.onnx`` if there is one with the same mode and
    tier (OpenVINO runs its quantized convolutions)."""
    if info.int8:
        return None
    twin = info.path.with_name(info.path.stem + ".int8.onnx")
    if not twin.is_file():
        return None
    try:
        other = read_info(twin)
    except ModelError:
        return None
    return other if (other.mode, other.tier) == (info.mode, info.tier) else None


def count_macs_per_pixel(path: str | os.PathLike[str], size: int = 64) -> float | None:
    """Multiply-adds per output pixel, counted from the graph (for models whose export did
    not record ``sharpcam.macs_per_pixel``): every convolution and matrix product at a
    ``size x size`` input, with shapes from OpenVINO's static reshape (ONNX's own shape
    inference stops at the ``Shape -> Reshape`` of a pixel unshuffle). ``None`` when
    openvino is not installed or the graph cannot be reshaped."""
    try:
        import openvino as ov
    except ImportError:
        return None
    try:
        model = ov.Core().read_model(str(path))
        model.reshape({model.inputs[0].get_any_name(): [1, 3, size, size]})
    except Exception:
        return None
    macs = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out = list(op.get_output_shape(0))
        weight = list(op.input_value(1).get_shape())
        if kind == "Convolution":  # weight [C_out, C_in, kH, kW]
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif kind == "GroupConvolution":  # weight [G, C_out/G, C_in/G, kH, kW]
            macs += int(np.prod(out)) * int(np.prod(weight[2:]))
        else:
            macs += int(np.prod(out)) * int(op.input_value(0).get_shape()[-1])
    out_shape = list(model.outputs[0].get_shape())
    return macs / float(out_shape[-1] * out_shape[-2])
