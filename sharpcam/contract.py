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
from pathlib import Path

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
