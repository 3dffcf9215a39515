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

from sharpcam.models import MACS_KEY as META_MACS
from sharpcam.models import MODE_KEY as META_MODE
from sharpcam.models import SCALE_KEY as META_SCALE
from sharpcam.models import TIER_KEY as META_TIER
from training.baselines import tune_unsharp
from training.batches import photo_degradation, run_degradation, to_batch
from training.calldata import training_clip_files
from training.card import write_card
from training.checkpoints import load_checkpoint, load_student, read_history
from training.config import Config, RunError, config_command, read_config
from training.data import Split, read_rgb
from training.degradations import parse_mix
from training.evaluation import (
    Evaluation,
    Row,
    TeacherMethod,
    TorchMethod,
    evaluate,
    save_showcase,
    write_report,
)
from training.modes import MODES, model_scale, on_upscaled, upscaled
from training.onnx_io import export_model
from training.plots import training_curves
from training.students import Ensemble, count_parameters, macs_per_pixel
from training.world import pick_device

ENSEMBLE = "ensemble (A+B)/2"

#: ONNX metadata keys beside those the runtime reads (:mod:`sharpcam.models`).
META_DEGRADATION = "sharpcam.degradation"
META_TEACHER = "sharpcam.teacher"


def shipped(config: Config, run: Path) -> tuple[list[str], str]:
    """Which students the exported model holds, and its row name in the report.

    The ``quality`` and ``balanced`` tiers ship the seed's ensemble of A and B (a balanced
    tier can also be one student cut out of a quality ensemble afterwards:
    :mod:`training.single_student`). The ``fast`` tier ships one student (it must fit the
    per-pixel budget alone): the one with the larger validation SSIM gain over the degraded
    input (A and B are validated on different halves, so their absolute SSIMs do not
    compare), chosen before anything is scored on the test set.
    """
    if config.tier != "fast":
        return ["a", "b"], ENSEMBLE
    gains = {}
    for w in "ab":
        saved = load_checkpoint(run / f"student_{w}" / "best.pt")
        row = read_history(run / f"student_{w}" / "history.csv")[int(saved["epoch"]) - 1]
        gains[w] = float(saved["val_ssim"]) - float(row["val_identity_ssim"])
    best = max("ab", key=lambda w: gains[w])
    return [best], f"student {best.upper()}"


def evaluate_students(
    config: Config, split: Split, device: torch.device, teacher: typing.Any = None
) -> tuple[Evaluation, dict[str, object]]:
    """Evaluate identity, unsharp mask, A, B, the ensemble (and the teacher) on the test set.

    In ``x2`` mode the identity and the unsharp mask work on the input's bicubic upscale.
    """
    run = Path(config.out)
    scale = MODES[config.mode]
    degradation = run_degradation(config)
    data = Path(split.data_dir)
    a = load_student(run / "student_a" / "best.pt").to(device)
    b = load_student(run / "student_b" / "best.pt").to(device)
    tuning = [img for img in (read_rgb(data / n) for n in split.train_a[:8]) if img is not None]
    unsharp = tune_unsharp(tuning, upscaled(degradation, scale))
    methods = {
        str(unsharp): on_upscaled(unsharp, scale),
        "student A": TorchMethod(a, device),
        "student B": TorchMethod(b, device),
    }
    if config.tier != "fast":
        methods[ENSEMBLE] = TorchMethod(Ensemble([a, b]), device)
    if teacher is not None:
        kind = "Restormer" if getattr(teacher, "kind", "restormer") == "restormer" else "sharpcam"
        methods[f"teacher ({kind})"] = TeacherMethod(teacher, factor=scale // model_scale(teacher))
    evaluation = evaluate(
        methods,
        data,
        split.test,
        degradation,
        showcase=split.showcase,
        device=str(device),
        scale=scale,
    )
    facts = {"unsharp mask": f"{unsharp}, tuned for PSNR on 8 training images of half A"}
    if scale > 1:
        facts["identity"] = f"the degraded x{scale} smaller input upscaled with bicubic"
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
    which, row = shipped(config, run)
    students = [load_student(run / f"student_{w}" / "best.pt") for w in which]
    a = students[0]
    metadata = onnx_metadata(config, split, students, evaluation.rows, row)
    export = export_model(
        Ensemble(students),
        run / "sharpcam.onnx",
        metadata=metadata,
        real_input=real_sample(config, split),
    )
    facts.update(
        {
            "command": config_command(config),
            "model": f"mode {config.mode} (x{MODES[config.mode]}), tier {config.tier}",
            "student": recipe_line(config, a),
            "data": data_line(split, config),
            "loss": config.loss_weights.describe(),
            "teacher": metadata[META_TEACHER],
            "degradation": degradation_line(config),
            "onnx": f"{export.path} ({export.bytes / 1e3:.1f} kB), parity max abs diff "
            f"{export.parity_random:.1e} random / {export.parity_real or 0.0:.1e} real",
        }
    )
    write_report(evaluation, run, title="sharpcam distillation run", facts=facts)
    write_card(run, export, metadata, evaluation, facts)
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


def degradation_line(config: Config) -> str:
    """The report's degradation line: the mix, and the per-image degradation the photo test
    set and the export's parity check use (for a mix of sequences only, ``seed``: say so
    rather than describe it as the training degradation)."""
    per_image = run_degradation(config)
    if per_image.name in {part.name for part in parse_mix(config.degradation).parts}:
        return f"{config.degradation}: {per_image.description}"
    return (
        f"{config.degradation} (encoded sequences only); the photo test set uses "
        f"{per_image.name}: {per_image.description}"
    )


def real_sample(config: Config, split: Split) -> torch.Tensor:
    """A real degraded frame for the export's parity check: the first showcase image."""
    name = split.showcase[0] if split.showcase else split.test[0]
    image = read_rgb(Path(split.data_dir) / name)
    if image is None:
        raise RunError(f"test image {name} cannot be decoded any more: restore it")
    degraded = run_degradation(config)(image)
    h, w = degraded.shape[:2]
    return to_batch([degraded[: h - h % 8, : w - w % 8]], torch.device("cpu"))


def onnx_metadata(
    config: Config,
    split: Split,
    students: list[nn.Module],
    rows: typing.Sequence[Row],
    shipped_row: str,
) -> dict[str, str]:
    """The ONNX ``metadata_props``: mode, tier, scale, cost, recipe, data, degradation,
    teacher, active loss terms, test figures (those of the report row ``shipped_row``, the
    exported model's: :func:`shipped`)."""
    by_name = {r.method: r for r in rows}
    identity, ensemble = by_name["identity"], by_name[shipped_row]
    return {
        META_SCALE: str(MODES[config.mode]),
        META_MODE: config.mode,
        META_TIER: config.tier,
        META_MACS: f"{macs_per_pixel(Ensemble(students)):.0f}",
        "sharpcam.recipe": recipe_line(config, students[0]),
        "sharpcam.data": data_line(split, config),
        META_DEGRADATION: config.degradation,
        META_TEACHER: recorded_teacher(config),
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
            f"{'ensemble' if ensemble.method == ENSEMBLE else ensemble.method} "
            f"PSNR {ensemble.psnr:.2f} dB ({ensemble.d_psnr:+.2f}) "
            f"SSIM {ensemble.ssim:.4f} ({ensemble.d_ssim:+.4f}) "
            f"on {identity.images} full test images "
            f"({photo_degradation(config.degradation)} degradation)"
        ),
        "sharpcam.students": str(len(students)),
    }


def teacher_line(config: Config, teacher: typing.Any) -> str:
    """Which teacher a run distils from, in one line (recorded in ``RUN/teacher.json``)."""
    if config.no_teacher or teacher is None:
        return "none (--no-teacher): trained on ground truth only"
    line = teacher.describe()
    factor = MODES[config.mode] // model_scale(teacher)
    return line + (f", given the input's bicubic x{factor} upscale" if factor > 1 else "")


def recorded_teacher(config: Config) -> str:
    """The teacher line a run recorded when it started."""
    try:
        return str(json.loads((Path(config.out) / "teacher.json").read_text())["teacher"])
    except (OSError, ValueError, KeyError):
        if config.no_teacher:
            return teacher_line(config, None)
        return "Restormer defocus deblurring (run made before teachers were recorded)"


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


def data_line(split: Split, config: Config | None = None) -> str:
    """The photos of the split and, when the run used ``--call-clips``, the clips (each
    feeds its half ``--call-clip-sequences`` windows)."""
    line = (
        f"{Path(split.data_dir).name}: {len(split.train_a)} images in half A, "
        f"{len(split.train_b)} in half B, {len(split.test)} test "
        f"({len(split.showcase)} showcase), seed {split.seed}, {len(split.dropped)} dropped"
    )
    if config is None or not config.call_clips:
        return line
    try:
        files = training_clip_files(config.call_clips)
    except RunError:  # re-exported where the clips are not: name the run's argument instead
        windows = config.call_clip_sequences
        return f"{line}; training clips of {config.call_clips} ({windows} windows each)"
    halves = "; ".join(
        f"half {h.upper()} " + ", ".join(f.stem for f in files[i::2])
        for i, h in enumerate("ab")
        if files[i::2]
    )
    return f"{line}; training clips ({config.call_clip_sequences} windows each): {halves}"


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
    which, row = shipped(config, run_dir)
    students = [load_student(run_dir / f"student_{w}" / "best.pt") for w in which]
    metadata = onnx_metadata(config, split, students, rows, row)
    export_model(
        Ensemble(students),
        out or run_dir / "sharpcam.onnx",
        metadata=metadata,
        real_input=real_sample(config, split),
    )
    return 0
