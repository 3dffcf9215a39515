"""The whole recipe behind ``python -m training.distill`` (see :mod:`training.distill`).

:func:`run` starts a run (split, teacher, VGG16, output folder), fills the teacher-output
cache, trains student A then student B (:mod:`training.train`) and finishes the run
(:mod:`training.finish`). Nothing is written into the run folder until the start has
succeeded, so a run that cannot start leaves no ``config.json`` or ``commands.log``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import typing
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from torch import nn

from sharpcam.atomic import atomic_write_text
from training.batches import half_patches, run_degradation, teacher_feed, teacher_key
from training.calldata import fill_call_cache
from training.config import Config, RunError
from training.data import Split, make_split
from training.finish import finish_run, teacher_line
from training.modes import MODES, model_scale
from training.students import STUDENTS, build_student
from training.train import train_student
from training.weights import WeightsError, default_cache_dir
from training.world import World, setup_world

log = logging.getLogger("training.distill")


def prepare_folder(out: Path) -> None:
    """Create ``out`` and prove it is writable, or raise one clear line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise RunError(
            f"cannot write to the output folder {out} ({exc.strerror or exc}): choose another --out"
        ) from exc


def cache_root(config: Config) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def setup_teacher(config: Config, world: World):  # -> TeacherCache | None
    """The teacher-output cache (Restormer, or the sharpcam model of ``--teacher-model``),
    or ``None`` when the teacher term is off."""
    from training.teacher import TeacherCache, load_teacher

    if config.no_teacher:
        log.info(
            "teacher: off (--no-teacher): no distillation term, students learn from ground truth"
        )
        return None
    if not run_degradation(config).deterministic:
        raise RunError(
            f"degradation {config.degradation!r} is random: its teacher outputs cannot be "
            "cached per patch; use --no-teacher with it"
        )
    if config.teacher_model is not None:
        from training.model_teacher import load_model_teacher

        teacher = load_model_teacher(config.teacher_model, world.device)
        mode_scale = MODES[config.mode]
        if mode_scale % teacher.scale:
            raise RunError(
                f"--teacher-model {config.teacher_model} is a x{teacher.scale} model: "
                f"--mode {config.mode} needs a "
                + ("x1 teacher" if mode_scale == 1 else f"x1 or x{mode_scale} teacher")
            )
    else:
        try:
            teacher = load_teacher(
                config.teacher, cache_dir=cache_root(config), device=world.device
            )
        except WeightsError as exc:
            raise WeightsError(
                f"teacher unavailable: {exc} (or train without it: --no-teacher)"
            ) from exc
    log.info("teacher: %s, frozen", teacher.describe())
    return TeacherCache(cache_root(config) / "teacher-outputs", teacher)


def check_student(config: Config) -> None:
    """The student exists and has the scale ``--mode`` needs."""
    if config.student not in STUDENTS:
        raise RunError(f"unknown --student {config.student!r}: choose one of {', '.join(STUDENTS)}")
    scale = model_scale(build_student(config.student, **config.student_args))
    if scale != MODES[config.mode]:
        raise RunError(
            f"--mode {config.mode} needs a student of scale {MODES[config.mode]}, "
            f"but {config.student!r} has scale {scale}: choose a matching --student"
        )


def setup_perceptual(config: Config, world: World) -> nn.Module | None:
    """The VGG16 perceptual loss, or ``None`` when that term is off."""
    from training.vgg import PerceptualLoss, load_vgg16_features

    if config.no_perceptual:
        log.info("perceptual: off (--no-perceptual)")
        return None
    try:
        features = load_vgg16_features(config.vgg, cache_dir=cache_root(config))
    except WeightsError as exc:
        raise WeightsError(
            f"VGG16 unavailable: {exc} (or train without the perceptual term: --no-perceptual)"
        ) from exc
    return PerceptualLoss(features).to(world.device)


def fill_teacher_cache(config: Config, split: Split, teacher_cache: typing.Any) -> None:
    """Run the teacher once over every training patch of both halves."""
    degradation = run_degradation(config)
    feed = teacher_feed(config.mode, teacher_cache.teacher)

    def items() -> Iterator[tuple[str, np.ndarray]]:
        for which in ("a", "b"):
            patches = half_patches(config, split, which)
            for i in range(len(patches)):
                degraded = degradation(np.ascontiguousarray(patches[i]))
                yield teacher_key(patches, i, config), feed(degraded)

    computed = teacher_cache.precompute(items(), batch_size=8)
    log.info("teacher cache: %d outputs computed, the rest were cached", computed)


def load_or_make_split(config: Config, *, resume: bool) -> Split:
    """The saved split of a resumed run (photos checked against their SHA-256), or a new one."""
    out = Path(config.out)
    if resume and (out / "split.json").exists():
        split = Split.load(out / "split.json")
        split.verify(Path(split.data_dir))
    else:
        split = make_split(
            Path(config.data),
            seed=config.seed,
            test_size=config.test_size,
            showcase=config.showcase,
        )
    dropped = "; ".join(f"{n}: {r}" for n, r in split.dropped)
    log.info(
        "data: %d images kept, %d dropped%s; split %d A / %d B / %d test (%d showcase) -> %s",
        len(split.train_a) + len(split.train_b) + len(split.test),
        len(split.dropped),
        f" ({dropped})" if dropped else "",
        len(split.train_a),
        len(split.train_b),
        len(split.test),
        len(split.showcase),
        out / "split.json",
    )
    return split


def write_start(config: Config, split: Split, command: str, teacher: typing.Any) -> None:
    """Record a run that has started: ``split.json``, ``teacher.json``, ``config.json``,
    ``commands.log``."""
    out = Path(config.out)
    prepare_folder(out)
    if not (out / "split.json").exists():
        split.save(out / "split.json")
    record = {"teacher": teacher_line(config, teacher)}
    if teacher is not None:
        record["sha256"] = teacher.checkpoint_hash
    atomic_write_text(out / "teacher.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1) + "\n")
    if command:
        with open(out / "commands.log", "a") as fh:
            fh.write(command + "\n")


def run(config: Config, *, resume: bool = False, command: str = "") -> int:
    """The whole recipe on ``config`` (as :func:`training.config.resolve_config` returns it).

    Returns:
        The exit status.
    """
    out = Path(config.out)
    world = setup_world(config.device)
    check_student(config)
    run_degradation(config)
    split = load_or_make_split(config, resume=resume) if world.main else None
    teacher_cache = setup_teacher(config, world)
    perceptual = setup_perceptual(config, world)
    teacher = teacher_cache.teacher if teacher_cache is not None else None
    if world.main:
        assert split is not None
        write_start(config, split, command, teacher)
    world.barrier()
    if split is None:
        split = Split.load(out / "split.json")
    if world.main:
        log.info(
            "loss: %s (device %s, %d process%s)",
            config.loss_weights.describe(),
            world.device,
            world.size,
            "es" if world.size > 1 else "",
        )
        if teacher_cache is not None:
            fill_teacher_cache(config, split, teacher_cache)
        fill_call_cache(config, split, cache_root(config))
    world.barrier()
    for which in ("a", "b"):
        if not (out / f"student_{which}" / "done.json").exists():
            train_student(
                which, config, split, world, teacher_cache, perceptual, call_root=cache_root(config)
            )
            if world.main:
                atomic_write_text(out / f"student_{which}" / "done.json", "{}\n")
        world.barrier()
    if not world.main:
        return 0
    return finish_run(config, split, world.device, teacher)
