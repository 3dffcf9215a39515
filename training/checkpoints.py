"""What a student folder holds: ``last.pt``/``best.pt`` checkpoints and ``history.csv``.

Every file is written through a temporary name and moved into place, so a kill leaves
the previous version.
"""

from __future__ import annotations

import csv
import io
import typing
from pathlib import Path

import torch
from torch import nn

from sharpcam.atomic import atomic_path, atomic_write_text
from training.config import RunError
from training.students import build_student

HISTORY_FIELDS = (
    "epoch",
    "loss",
    "loss_teacher",
    "loss_gt",
    "loss_perceptual",
    "loss_temporal",
    "val_psnr",
    "val_ssim",
    "val_identity_psnr",
    "val_identity_ssim",
    "patches_per_s",
    "seconds",
)


def save_checkpoint(path: Path, payload: dict[str, object]) -> None:
    """``torch.save`` through a temporary file (a kill leaves the previous file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, typing.Any]:
    """A checkpoint's payload, or :class:`RunError` naming the file and the fix."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RunError(
            f"checkpoint {path} is unreadable ({exc}): delete it to restart that student"
        ) from exc


def load_student(path: Path) -> nn.Module:
    """The student saved in a checkpoint (architecture from its ``student`` entry), in eval mode."""
    saved = load_checkpoint(path)
    model = build_student(saved["student"]["name"], **saved["student"]["kwargs"])
    model.load_state_dict(saved["model"])
    return model.eval()


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """One CSV row per epoch (:data:`HISTORY_FIELDS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a ``history.csv`` (empty when the file does not exist)."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
