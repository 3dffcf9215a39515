"""The ONNX contract between training (which exports) and the runtime (which runs).

A sharpcam model is an ONNX graph with

* one input named :data:`INPUT_NAME`: float32 ``[N, 3, H, W]``, RGB in ``[0, 1]``,
  N, H and W dynamic, H and W multiples of :data:`MULTIPLE`;
* one output named :data:`OUTPUT_NAME`: same shape, RGB in ``[0, 1]`` (clamped).

Metadata properties (``metadata_props``) describe how it was made; the runtime only
reads them for display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

INPUT_NAME = "frames"
OUTPUT_NAME = "sharpened"
MULTIPLE = 8
CHANNELS = 3

#: Where the shipped default model lives in a source checkout (``pip install -e .``).
REPO_MODEL = Path(__file__).resolve().parent.parent / "models" / "sharpcam.onnx"


def default_model_path() -> Path:
    """The model used when none is named: ``$SHARPCAM_MODEL`` or the shipped file."""
    env = os.environ.get("SHARPCAM_MODEL")
    return Path(env) if env else REPO_MODEL


class TensorInfo(Protocol):
    """What the contract check reads of a graph input or output (ONNX Runtime's ``NodeArg``
    has these attributes): ``type`` is e.g. ``"tensor(float)"``; ``shape`` holds ints for
    fixed axes and strings or ``None`` for dynamic ones."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None]: ...


def contract_problem(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> str | None:
    """``None`` if a graph with these inputs and outputs meets the contract, else one line
    saying what differs (for example ``input 'x' should be named 'frames'``).

    Checks names, element type (float32), rank 4 with 3 channels on axis 1, and that H and
    W are dynamic (a model exported at a fixed size cannot take every frame size).
    """
    if len(inputs) != 1 or len(outputs) != 1:
        got = ", ".join(repr(t.name) for t in inputs) or "none"
        return f"the model should have 1 input {INPUT_NAME!r} and 1 output, got inputs {got}"
    for role, info, want in (("input", inputs[0], INPUT_NAME), ("output", outputs[0], OUTPUT_NAME)):
        if info.name != want:
            return f"{role} {info.name!r} should be named {want!r}"
        if info.type != "tensor(float)":
            return f"{role} {want!r} is {info.type}, the contract needs tensor(float) (float32)"
        shape = list(info.shape)
        if len(shape) != 4:
            return f"{role} {want!r} has rank {len(shape)}, the contract needs [N,3,H,W]"
        if shape[1] != CHANNELS:
            return f"{role} {want!r} has {shape[1]} channels on axis 1, the contract needs 3 (RGB)"
        if isinstance(shape[2], int) or isinstance(shape[3], int):
            return (
                f"{role} {want!r} has a fixed size {shape[2]}x{shape[3]}; the contract needs "
                "dynamic H and W (export with dynamic_axes)"
            )
    return None
