"""Distil Restormer into two small students and export their ensemble.

``python -m training.distill --data PHOTOS --out runs/x`` runs the whole recipe of the seed
write-up, resumable with ``--resume``:

1. scan and split the photos (``split.json``), see :mod:`training.data`;
2. load the frozen teacher and fill its output cache, and VGG16 for the perceptual term
   (either can be switched off explicitly when its weights are not available);
3. train student A on half A and student B on half B (``student_a/``, ``student_b/``:
   ``last.pt`` for resuming, ``best.pt`` by validation SSIM, ``history.csv``);
4. evaluate the identity, a tuned unsharp mask, A, B, the ensemble and the teacher on the
   full test images (``report.md``, ``report.json``, ``showcase/``, ``curves.png``);
5. export the ensemble to ONNX with a parity check (``sharpcam.onnx``) and write a model
   card (``MODEL_CARD.md``).

Each student is selected by its average SSIM on a fixed sample of patches from the
*other* half (A on B, B on A): data the student never trained on, without touching the
test set. ``torchrun --nproc_per_node N -m training.distill ...`` trains each student with
DistributedDataParallel over N processes (one per GPU); one device needs no flag.

This module is the command line only: settings in :mod:`training.config`, the recipe in
:mod:`training.run`, the loop in :mod:`training.train`, the evaluation and export of a
trained run in :mod:`training.finish`.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from training.config import RunError, build_parser, parse_config, resolve_config
from training.data import DataError

PROG = "python -m training.distill"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.distill``; returns the exit status.

    The arguments and the data folder are checked before torch is imported, so a
    mistake is reported at once and leaves nothing behind.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(*help_choices()) if {"-h", "--help"} & set(args) else build_parser()
    config, resume, explicit = parse_config(args, parser)
    try:
        config = resolve_config(config, resume=resume, explicit=explicit)
    except (RunError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from training.onnx_io import ExportError
    from training.run import run
    from training.weights import WeightsError
    from training.world import leave_world

    try:
        return run(config, resume=resume, command=f"{PROG} {shlex.join(args)}")
    except (RunError, DataError, WeightsError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if (Path(config.out) / "config.json").exists():
            print(
                f"interrupted: progress is saved in {config.out}; continue with the same "
                "command and --resume",
                file=sys.stderr,
            )
        else:
            print("interrupted before the run started: nothing was saved", file=sys.stderr)
        return 130
    finally:
        leave_world()


def help_choices() -> tuple[list[str], list[str]]:
    """The student and degradation names, for ``--help`` only (listing them imports torch)."""
    from training.degradations import DEGRADATIONS
    from training.students import STUDENTS

    return list(STUDENTS), list(DEGRADATIONS)


if __name__ == "__main__":
    sys.exit(main())
