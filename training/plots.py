"""Figures people would rather see than read: training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter

from sharpcam.atomic import atomic_path

#: Colour of the degraded-input reference lines.
REFERENCE = "grey"


def loss_axis(ax: Axes, values: Sequence[float]) -> None:
    """Log scale with 1-2-5 ticks when the loss spans a decade or more, else linear."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))


def curves_figure(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> Figure:
    """The figure of :func:`training_curves`; every line is named in its axes' legend."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    losses: list[float] = []
    for label, rows in histories.items():
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        losses += [r["loss"] for r in rows]
        (line,) = axes[0].plot(epochs, [r["loss"] for r in rows], marker="o", label=label)
        axes[1].plot(
            epochs,
            [r["val_psnr"] - r["val_identity_psnr"] for r in rows],
            marker="o",
            label=label,
            color=line.get_color(),
        )
        axes[2].plot(
            epochs, [r["val_ssim"] for r in rows], marker="o", label=label, color=line.get_color()
        )
        axes[2].axhline(
            rows[0]["val_identity_ssim"],
            ls="--",
            lw=1,
            color=line.get_color(),
            label=f"degraded input ({label}'s validation set)",
        )
    axes[1].axhline(0.0, ls="--", lw=1, color=REFERENCE, label="degraded input")
    loss_axis(axes[0], losses)
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].set(title="validation PSNR gain over the input (dB)", xlabel="epoch")
    axes[2].set(title="validation SSIM", xlabel="epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> None:
    """Plot loss, validation PSNR gain and validation SSIM per epoch for each student.

    Args:
        histories: student label -> list of per-epoch rows with keys ``epoch``, ``loss``,
            ``val_psnr``, ``val_ssim``, ``val_identity_psnr``, ``val_identity_ssim``.
        path: the PNG to write (atomically).
    """
    fig = curves_figure(histories)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
