"""A run's model card, ``RUN/MODEL_CARD.md``: what the exported file is and how it was made.

Written from the same facts as the report and the ONNX metadata, so the three agree; the
cards in ``models/`` start from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from sharpcam.atomic import atomic_write_text
from sharpcam.contract import INPUT_NAME, OUTPUT_NAME
from training.evaluation import Evaluation
from training.onnx_io import ExportReport


def card_text(
    export: ExportReport,
    metadata: Mapping[str, str],
    evaluation: Evaluation,
    facts: Mapping[str, object],
) -> str:
    """The markdown of the card."""
    scale = int(metadata.get("sharpcam.scale", "1"))
    out_shape = "same shape" if scale == 1 else f"`[N, 3, {scale}H, {scale}W]`"
    digest = hashlib.sha256(export.path.read_bytes()).hexdigest()
    rows = [
        ("file", f"`{export.path.name}`, {export.bytes:,} bytes, ONNX opset {export.opset}"),
        ("sha256", f"`{digest}`"),
        ("input", f"`{INPUT_NAME}`: float32 `[N, 3, H, W]`, RGB in [0, 1], H and W multiples of 8"),
        ("output", f"`{OUTPUT_NAME}`: {out_shape}, clamped to [0, 1]"),
        (
            "mode / tier / scale",
            f"{metadata.get('sharpcam.mode')} / {metadata.get('sharpcam.tier')} / x{scale}",
        ),
        ("multiply-adds per output pixel", metadata.get("sharpcam.macs_per_pixel", "?")),
        ("teacher", metadata.get("sharpcam.teacher", "?")),
        ("loss", str(facts.get("loss", "?"))),
        ("degradation", str(facts.get("degradation", "?"))),
        ("data", str(facts.get("data", "?"))),
        ("students", str(facts.get("student", "?"))),
        (
            "parity",
            f"ONNX Runtime vs PyTorch max abs diff {export.parity_random:.1e} (random input), "
            f"{export.parity_real or 0.0:.1e} (real input)",
        ),
    ]
    lines = [f"# Model card: `{export.path.name}`", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += [
        "",
        "## How it was made",
        "",
        "```bash",
        str(facts.get("command", "")),
        "```",
        "",
        f"## Test figures ({evaluation.rows[0].images} full test images, the degraded input first)",
        "",
        evaluation.table(),
        "",
    ]
    return "\n".join(lines)


def write_card(
    run: Path,
    export: ExportReport,
    metadata: Mapping[str, str],
    evaluation: Evaluation,
    facts: Mapping[str, object],
) -> Path:
    """Write ``run/MODEL_CARD.md`` (atomically) and return its path."""
    path = run / "MODEL_CARD.md"
    atomic_write_text(path, card_text(export, metadata, evaluation, facts))
    return path
