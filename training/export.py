"""``python -m training.export --run RUN --out FILE``: export a run's best students as one
ONNX ensemble honouring the runtime's contract (:mod:`sharpcam.contract`).

Before anything is written, ``onnx.checker`` runs a full check and ONNX Runtime's output
is compared with PyTorch's on a random and on a real input (max abs difference at most
``1e-4``); the file is then written atomically. The export itself is
:mod:`training.onnx_io`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.config import RunError
from training.data import DataError
from training.finish import export_run
from training.onnx_io import (  # re-exported: the library behind this command
    ExportError,
    ExportReport,
    export_model,
    read_metadata,
)

__all__ = ["ExportError", "ExportReport", "export_model", "main", "read_metadata"]


def main(argv: list[str] | None = None) -> int:
    """``python -m training.export --run RUN --out FILE``: export a run's best students."""
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="run folder of training.distill")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/sharpcam.onnx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return export_run(args.run, args.out)
    except (RunError, DataError, ExportError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
