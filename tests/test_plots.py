"""Training curves: every line is named in a legend, the loss axis has readable ticks."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from training.plots import curves_figure, training_curves


def history(start_loss: float, decay: float, identity_ssim: float) -> list[dict[str, float]]:
    return [
        {
            "epoch": e + 1,
            "loss": start_loss * decay**e,
            "val_psnr": 30.0 + 0.2 * e,
            "val_ssim": identity_ssim + 0.002 * e,
            "val_identity_psnr": 30.0,
            "val_identity_ssim": identity_ssim,
        }
        for e in range(6)
    ]


@pytest.mark.parametrize("decay", [0.97, 0.4], ids=["narrow loss range", "several decades"])
def test_every_line_is_labelled_and_ticks_are_readable(decay: float) -> None:
    histories = {"student A": history(0.02, decay, 0.91), "student B": history(0.021, decay, 0.92)}
    fig = curves_figure(histories)
    try:
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None
            named = {t.get_text() for t in legend.get_texts()}
            for line in ax.get_lines():
                assert not line.get_label().startswith("_"), (ax.get_title(), line)
                assert line.get_label() in named
        loss_ax = fig.axes[0]
        low, high = loss_ax.get_ylim()
        fig.canvas.draw()
        visible = [
            t
            for t in loss_ax.get_yticklabels()
            if t.get_text() and low <= t.get_position()[1] <= high
        ]
        assert len(visible) >= 3, [t.get_text() for t in visible]
    finally:
        plt.close(fig)


def test_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    training_curves({"student A": history(0.02, 0.9, 0.9), "student B": []}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
