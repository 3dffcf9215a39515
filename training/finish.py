"""Evaluate, draw, export and describe a trained run folder.

:func:`finish_run` ends ``python -m training.distill``; ``python -m training.evaluate``
and ``python -m training.export`` call :func:`evaluate_run` and :func:`export_run` on a
saved run folder.
"""

from __future__ import annotations

import json
import typing
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from training.baselines import tune_unsharp
from training.batches import resolve_degradation, to_batch
from training.checkpoints import load_student, read_history
from training.config import Config, RunError, config_command, read_config
from training.data import Split, read_rgb
from training.evaluation import (
    Evaluation,
    Row,
    TeacherMethod,
    TorchMethod,
    evaluate,
    save_showcase,
    write_report,
)
from training.onnx_io import export_model
from training.plots import training_curves
from training.students import Ensemble, count_parameters, macs_per_pixel
from training.world import pick_device

ENSEMBLE = "ensemble (A+B)/2"


def evaluate_students(
    config: Config, split: Split, device: torch.device, teacher: typing.Any = None
) -> tuple[Evaluation, dict[str, object]]:
    """Evaluate identity, unsharp mask, A, B, the ensemble (and the teacher) on the test set."""
    run = Path(config.out)
    degradation = resolve_degradation(config.degradation)
    data = Path(split.data_dir)
    a = load_student(run / "student_a" / "best.pt").to(device)
    b = load_student(run / "student_b" / "best.pt").to(device)
    tuning = [img for img in (read_rgb(data / n) for n in split.train_a[:8]) if img is not None]
    unsharp = tune_unsharp(tuning, degradation)
    methods = {
        str(unsharp): unsharp,
        "student A": TorchMethod(a, device),
        "student B": TorchMethod(b, device),
        ENSEMBLE: TorchMethod(Ensemble([a, b]), device),
    }
    if teacher is not None:
        methods["teacher (Restormer)"] = TeacherMethod(teacher)
    evaluation = evaluate(
        methods,
        data,
        split.test,
        degradation,
        showcase=split.showcase,
        device=str(device),
    )
    facts = {"unsharp mask": f"{unsharp}, tuned for PSNR on 8 training images of half A"}
    return evaluation, facts


def finish_run(config: Config, split: Split, device: torch.device, teacher: typing.Any) -> int:
    """Evaluate, draw, export and describe a trained run; print the summary."""
    run = Path(config.out)
    evaluation, facts = evaluate_students(config, split, device, teacher)
    histories = {
        f"student {w.upper()}": read_history(run / f"student_{w}" / "history.csv") for w in "ab"
    }
    training_curves(histories, run / "curves.png")
    save_showcase(evaluation, run, [r.method for r in evaluation.rows])
    a = load_student(run / "student_a" / "best.pt")
    b = load_student(run / "student_b" / "best.pt")
    metadata = onnx_metadata(config, split, a, evaluation.rows)
    export = export_model(
        Ensemble([a, b]),
        run / "sharpcam.onnx",
        metadata=metadata,
        real_input=real_sample(config, split),
    )
    facts.update(
        {
            "command": config_command(config),
            "student": recipe_line(config, a),
            "data": data_line(split),
            "loss": config.loss_weights.describe(),
            "degradation": resolve_degradation(config.degradation).description,
            "onnx": f"{export.path} ({export.bytes / 1e3:.1f} kB), parity max abs diff "
            f"{export.parity_random:.1e} random / {export.parity_real or 0.0:.1e} real",
        }
    )
    write_report(evaluation, run, title="sharpcam distillation run", facts=facts)
    summary = "\n".join(
        [
            "",
            f"run {run}: {facts['student']}",
            f"loss: {facts['loss']}",
            evaluation.table(),
            f"exported {export.path}",
            "",
        ]
    )
    print(summary)
    return 0


def real_sample(config: Config, split: Split) -> torch.Tensor:
    """A real degraded frame for the export's parity check: the first showcase image."""
    name = split.showcase[0] if split.showcase else split.test[0]
    image = read_rgb(Path(split.data_dir) / name)
    if image is None:
        raise RunError(f"test image {name} cannot be decoded any more: restore it")
    return to_batch([resolve_degradation(config.degradation)(image)], torch.device("cpu"))


def onnx_metadata(
    config: Config, split: Split, student: nn.Module, rows: typing.Sequence[Row]
) -> dict[str, str]:
    """The ONNX ``metadata_props``: recipe, data, active loss terms, test figures."""
    by_name = {r.method: r for r in rows}
    identity, ensemble = by_name["identity"], by_name[ENSEMBLE]
    return {
        "sharpcam.recipe": recipe_line(config, student),
        "sharpcam.data": data_line(split),
        "sharpcam.loss": config.loss_weights.describe(),
        "sharpcam.loss_off": ", ".join(
            name
            for name, off in (
                ("teacher term (--no-teacher)", config.no_teacher),
                ("perceptual term (--no-perceptual)", config.no_perceptual),
            )
            if off
        )
        or "none",
        "sharpcam.test": (
            f"degraded input PSNR {identity.psnr:.2f} dB SSIM {identity.ssim:.4f}; "
            f"ensemble PSNR {ensemble.psnr:.2f} dB ({ensemble.d_psnr:+.2f}) "
            f"SSIM {ensemble.ssim:.4f} ({ensemble.d_ssim:+.4f}) "
            f"on {identity.images} full test images ({config.degradation} degradation)"
        ),
        "sharpcam.students": "2",
    }


def recipe_line(config: Config, model: nn.Module) -> str:
    arch = config.student + (
        f" (width {config.width}, depth {config.depth})" if config.student == "residual" else ""
    )
    return (
        f"{arch}, {count_parameters(model)} parameters, {macs_per_pixel(model) / 1e3:.1f}k "
        f"MACs/pixel each; {config.epochs} epochs, batch {config.batch_size}, Adam lr "
        f"{config.lr:g} {config.lr_schedule}, {config.patch_size}px patches stride "
        f"{config.stride}, degradation {config.degradation}"
    )


def data_line(split: Split) -> str:
    return (
        f"{Path(split.data_dir).name}: {len(split.train_a)} images in half A, "
        f"{len(split.train_b)} in half B, {len(split.test)} test "
        f"({len(split.showcase)} showcase), seed {split.seed}, {len(split.dropped)} dropped"
    )


def saved_run(run_dir: Path) -> tuple[Config, Split]:
    """The config and split of a run folder."""
    config = read_config(run_dir)
    return replace(config, out=str(run_dir)), Split.load(run_dir / "split.json")


def evaluate_run(run_dir: Path, *, device: str = "auto") -> int:
    """Re-evaluate (and re-export) a run from its best checkpoints."""
    config, split = saved_run(run_dir)
    return finish_run(config, split, pick_device(device), None)


def export_run(run_dir: Path, out: Path | None) -> int:
    """Export a run's best students to ``out`` (default ``RUN/sharpcam.onnx``)."""
    config, split = saved_run(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    rows = [Row(**r) for r in report["rows"]]
    a = load_student(run_dir / "student_a" / "best.pt")
    b = load_student(run_dir / "student_b" / "best.pt")
    metadata = onnx_metadata(config, split, a, rows)
    export_model(
        Ensemble([a, b]),
        out or run_dir / "sharpcam.onnx",
        metadata=metadata,
        real_input=real_sample(config, split),
    )
    return 0
