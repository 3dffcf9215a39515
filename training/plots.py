"""Figures people would rather see than read: training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sharpcam.atomic import atomic_path


def training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> None:
    """Plot loss, validation PSNR gain and validation SSIM per epoch for each student.

    Args:
        histories: student label -> list of per-epoch rows with keys ``epoch``, ``loss``,
            ``val_psnr``, ``val_ssim``, ``val_identity_psnr``, ``val_identity_ssim``.
        path: the PNG to write (atomically).
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for label, rows in histories.items():
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["loss"] for r in rows], marker="o", label=label)
        axes[1].plot(
            epochs,
            [r["val_psnr"] - r["val_identity_psnr"] for r in rows],
            marker="o",
            label=label,
        )
        axes[2].plot(epochs, [r["val_ssim"] for r in rows], marker="o", label=label)
        axes[2].axhline(rows[0]["val_identity_ssim"], ls="--", lw=1, color="grey")
    axes[1].axhline(0.0, ls="--", lw=1, color="grey", label="degraded input")
    axes[0].set(title="training loss", xlabel="epoch", yscale="log")
    axes[1].set(title="validation PSNR gain over the input (dB)", xlabel="epoch")
    axes[2].set(title="validation SSIM (dashed: degraded input)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
