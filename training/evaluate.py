"""``python -m training.evaluate --run RUN``: re-evaluate (and re-export) a run folder of
``training.distill`` from its best checkpoints.

Every method sees the degraded test image (the whole image) and is scored against the
ground truth with PSNR and SSIM; the degraded input itself is the first row, and every
other row carries its gain over it. The evaluation itself is :mod:`training.evaluation`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.config import RunError
from training.data import DataError
from training.evaluation import (  # re-exported: the library behind this command
    Evaluation,
    Row,
    TeacherMethod,
    TorchMethod,
    evaluate,
    save_showcase,
    write_report,
)
from training.finish import evaluate_run
from training.onnx_io import ExportError

__all__ = [
    "Evaluation",
    "Row",
    "TeacherMethod",
    "TorchMethod",
    "evaluate",
    "main",
    "save_showcase",
    "write_report",
]


def main(argv: list[str] | None = None) -> int:
    """``python -m training.evaluate --run RUN``: re-evaluate a run from its checkpoints."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="run folder of training.distill")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return evaluate_run(args.run, device=args.device)
    except (RunError, DataError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
