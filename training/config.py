"""The settings of a distillation run: one frozen :class:`Config`, its parser and checks.

Nothing here imports torch: ``python -m training.distill`` parses and checks its
arguments (and the data folder) with this module alone, so a mistake is reported in a
fraction of a second, before the heavy imports and before anything is written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from training.data import list_images
from training.modes import MODES, TIERS

if typing.TYPE_CHECKING:
    from training.losses import LossWeights


class RunError(RuntimeError):
    """A run cannot start or continue; the message names the problem and the fix."""


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Defaults are the seed write-up's where it gives one."""

    data: str = field(default="", metadata={"help": "folder of training photos"})
    out: str = field(default="runs/sharpcam", metadata={"help": "run folder"})
    student: str = field(
        default="residual", metadata={"help": "architecture, a name in training.students"}
    )
    width: int = field(default=32, metadata={"help": "residual student: feature channels"})
    depth: int = field(default=4, metadata={"help": "residual student: middle convolutions"})
    epochs: int = field(default=15, metadata={"help": "epochs per student"})
    batch_size: int = field(default=1, metadata={"help": "patches per step (per process)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "constant (the seed's) or cosine (decay to 0 over the run)"},
    )
    patch_size: int = field(default=256, metadata={"help": "training patch side"})
    stride: int = field(default=256, metadata={"help": "patch stride"})
    seed: int = field(default=42, metadata={"help": "split, order and init seed"})
    test_size: float = field(default=0.2, metadata={"help": "share of images for testing"})
    showcase: int = field(default=50, metadata={"help": "test images in the showcase set"})
    degradation: str = field(
        default="seed",
        metadata={
            "help": "input degradation, a name in training.degradations or a weighted mix "
            "such as call:0.8,seed:0.2 (call, codec: encoded sequences, cached once)"
        },
    )
    mode: str = field(
        default="restore",
        metadata={
            "help": "restore (same size out), x2 (the half-size decoded frame in) or deblock "
            "(same size, codec blocking: train on --degradation codec)"
        },
    )
    tier: str = field(
        default="quality",
        metadata={"help": "quality, balanced or fast: the tier recorded in the model"},
    )
    call_sequences: int = field(
        default=2, metadata={"help": "call degradation: encoded sequences per photo"}
    )
    call_clips: str | None = field(
        default=None,
        metadata={
            "help": "training clips (files or folders, comma-separated) whose frames also feed "
            "the call sequences, alternating between halves A and B; evaluation clips are "
            "refused (training/sequences.py names both)"
        },
    )
    call_clip_sequences: int = field(
        default=16, metadata={"help": "call sequences drawn from each training clip"}
    )
    teacher: str | None = field(
        default=None, metadata={"help": "Restormer checkpoint (default: download to cache)"}
    )
    teacher_model: str | None = field(
        default=None,
        metadata={"help": "a sharpcam model as the teacher instead: exported .onnx or best.pt"},
    )
    init: str | None = field(
        default=None,
        metadata={
            "help": "start the students from these weights (fine-tuning): an exported "
            "sharpcam .onnx (A from its student A, B from B), a run folder (A from "
            "student_a/best.pt, B from student_b/best.pt) or a student's best.pt"
        },
    )
    no_teacher: bool = field(
        default=False, metadata={"help": "train without the teacher term (no distillation)"}
    )
    vgg: str | None = field(
        default=None, metadata={"help": "torchvision vgg16-397923af.pth (default: download)"}
    )
    no_perceptual: bool = field(
        default=False, metadata={"help": "train without the VGG16 perceptual term"}
    )
    w_teacher: float = field(default=0.9, metadata={"help": "weight of L1(student, teacher)"})
    w_gt: float = field(default=0.1, metadata={"help": "weight of L1(student, ground truth)"})
    w_perceptual: float = field(default=0.005, metadata={"help": "weight of the VGG16 term"})
    w_temporal: float = field(
        default=0.0,
        metadata={
            "help": "weight of L1((S_t - S_t-1) - (GT_t - GT_t-1)) on consecutive frames of "
            "the call sequences, degraded as the mix draws (needs a call share in --degradation)"
        },
    )
    max_patches: int | None = field(
        default=None, metadata={"help": "use at most this many patches per half"}
    )
    val_patches: int = field(default=64, metadata={"help": "validation patches (other half)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    checkpoint_every: int = field(default=500, metadata={"help": "also save last.pt every N steps"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "weights and teacher-output cache (default: ~/.cache)"}
    )

    @property
    def loss_weights(self) -> LossWeights:
        from training.losses import LossWeights

        return LossWeights(
            teacher=0.0 if self.no_teacher else self.w_teacher,
            gt=self.w_gt,
            perceptual=0.0 if self.no_perceptual else self.w_perceptual,
            temporal=self.w_temporal,
        )

    @property
    def student_args(self) -> dict[str, int]:
        return {"width": self.width, "depth": self.depth} if self.student == "residual" else {}


#: ``--preset`` values: a short run that finishes on a laptop CPU in minutes.
PRESETS: dict[str, dict[str, object]] = {
    "cpu-quick": {"epochs": 3, "max_patches": 300, "val_patches": 32, "showcase": 8},
}

#: Settings that may differ when a run is resumed; any other difference is refused.
RESUMABLE = frozenset({"device", "epochs", "checkpoint_every", "cache_dir", "teacher", "vgg"})

#: Settings left out of the command line recorded in reports (machine-specific paths).
LOCAL = frozenset({"cache_dir", "teacher", "vgg"})


def build_parser(students: Sequence[str] = (), degradations: Sequence[str] = ()):
    """The ``python -m training.distill`` parser, one option per :class:`Config` field.

    ``students``/``degradations`` name the choices in the help (the CLI passes them only
    for ``--help``: listing them imports torch).
    """
    parser = argparse.ArgumentParser(
        prog="python -m training.distill",
        description="Distil Restormer into two student CNNs and export their ONNX ensemble.",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="start from a named set of settings"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    hints = typing.get_type_hints(Config)
    defaults = Config()
    choices = {"student": students, "degradation": degradations}
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        what = f.metadata["help"]
        if choices.get(f.name):
            what = f"{what.split(',')[0]}: {', '.join(choices[f.name])}"
        help_text = f"{what} (default: {getattr(defaults, f.name)})"
        if hints[f.name] is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t)
            parser.add_argument(
                flag, type=kind, default=None, help=help_text, metavar=f.name.upper()
            )
    return parser


def parse_config(
    argv: Sequence[str] | None, parser: argparse.ArgumentParser | None = None
) -> tuple[Config, bool, dict[str, object]]:
    """Config from preset + command line; returns ``(config, resume, explicit options)``."""
    args = vars((parser or build_parser()).parse_args(argv))
    resume = bool(args.pop("resume"))
    preset = args.pop("preset")
    explicit = {k: v for k, v in args.items() if v is not None}
    settings: dict[str, object] = dict(PRESETS[preset]) if preset else {}
    settings.update(explicit)
    return replace(Config(), **settings), resume, explicit


def check_config(config: Config) -> None:
    """Raise :class:`RunError` for settings that cannot work (no torch needed)."""
    if not config.data:
        raise RunError("no data folder given: pass --data PHOTOS_FOLDER")
    for name in ("epochs", "batch_size", "patch_size", "stride", "val_patches"):
        if getattr(config, name) < 1:
            raise RunError(f"--{name.replace('_', '-')} must be at least 1")
    if config.lr_schedule not in LR_SCHEDULES:
        raise RunError(
            f"unknown --lr-schedule {config.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}"
        )
    if config.mode not in MODES:
        raise RunError(f"unknown --mode {config.mode!r}: choose one of {', '.join(MODES)}")
    if config.tier not in TIERS:
        raise RunError(f"unknown --tier {config.tier!r}: choose one of {', '.join(TIERS)}")
    multiple = 8 * MODES[config.mode]
    if config.patch_size % multiple:
        raise RunError(
            f"--patch-size must be a multiple of {multiple}"
            + (" in --mode x2 (the input patch is half of it)" if multiple > 8 else "")
        )
    if config.teacher_model is not None:
        if config.no_teacher:
            raise RunError("--teacher-model and --no-teacher contradict: drop one")
        if config.teacher is not None:
            raise RunError("--teacher (Restormer) and --teacher-model: choose one teacher")
        if not Path(config.teacher_model).is_file():
            raise RunError(
                f"--teacher-model {config.teacher_model} does not exist: pass an exported "
                "sharpcam .onnx or a student's best.pt"
            )
    if config.init is not None and not Path(config.init).exists():
        raise RunError(
            f"--init {config.init} does not exist: pass an exported sharpcam .onnx, a run "
            "folder or a student's best.pt to start from (or drop --init)"
        )
    teacher = 0.0 if config.no_teacher else config.w_teacher
    perceptual = 0.0 if config.no_perceptual else config.w_perceptual
    if not (teacher or config.w_gt or perceptual):
        raise RunError("every loss term is off or has weight 0: nothing to train on")
    check_degradation(config, teacher > 0)


def check_degradation(config: Config, teacher: bool) -> None:
    """Raise :class:`RunError` for a ``--degradation`` mix or ``--mode`` that cannot train."""
    from training.degradations import DEGRADATIONS, MixError, parse_mix

    try:
        mix = parse_mix(config.degradation)
    except MixError as exc:
        raise RunError(str(exc)) from None
    for part in mix.parts:
        if not part.sequence and part.name not in DEGRADATIONS:
            raise RunError(
                f"--degradation {part.name!r} is an evaluation degradation of whole clips: "
                f"train on call and/or {', '.join(DEGRADATIONS)}"
            )
        if config.mode == "x2" and part.name not in ("call", "seed"):
            raise RunError(f"--mode x2 trains on call and seed only, not {part.name!r}")
        if config.mode == "deblock" and part.name != "codec":
            raise RunError(
                f"--mode deblock trains on --degradation codec alone, not {part.name!r} "
                "(sharpening belongs to --mode restore)"
            )
    sequences = sum(p.share for p in mix.parts if p.sequence)
    if teacher and sequences > 0 and config.teacher_model is None:
        raise RunError(
            "Restormer's outputs are cached per photo patch, so call sequences have none: "
            "distil from a sharpcam model (--teacher-model FILE, run on each call frame), "
            "add --no-teacher, or train on a per-image degradation such as seed"
        )
    if config.call_sequences < 1:
        raise RunError("--call-sequences must be at least 1")
    if config.call_clips and sequences == 0:
        raise RunError(
            "--call-clips feeds call sequences: add a call (or codec) share to --degradation"
        )
    if config.call_clip_sequences < 1:
        raise RunError("--call-clip-sequences must be at least 1")
    if config.w_temporal < 0 or (config.w_temporal > 0 and sequences == 0):
        raise RunError(
            "--w-temporal needs consecutive frames: give it a weight >= 0 and a call share in "
            "--degradation (e.g. call:0.8,seed:0.2)"
        )


def load_run_config(
    config: Config, *, resume: bool, explicit: dict[str, object], out: Path
) -> Config:
    """The config to use: new, or the saved one when resuming (with allowed overrides)."""
    saved_path = out / "config.json"
    if not resume:
        if saved_path.exists():
            raise RunError(
                f"{out} already holds a run: add --resume to continue it, or choose another --out"
            )
        return config
    if not saved_path.exists():
        raise RunError(f"nothing to resume in {out}: run once without --resume")
    saved = read_config(out)
    changed = sorted(
        k
        for k, v in explicit.items()
        if k not in RESUMABLE and k != "out" and getattr(saved, k) != v
    )
    if changed:
        raise RunError(
            f"--resume keeps the saved recipe, but these options differ: {', '.join(changed)}; "
            "drop them or start a new --out"
        )
    return replace(saved, **{k: v for k, v in explicit.items() if k in RESUMABLE}, out=config.out)


def resolve_config(config: Config, *, resume: bool, explicit: dict[str, object]) -> Config:
    """The checked config of a new or resumed run; also checks that the data folder holds
    images. Reads files only; raises :class:`RunError` or ``DataError``."""
    config = load_run_config(config, resume=resume, explicit=explicit, out=Path(config.out))
    check_config(config)
    if not resume:
        list_images(Path(config.data))
    return config


def read_config(run_dir: Path) -> Config:
    """The :class:`Config` saved in ``run_dir/config.json``."""
    try:
        return Config(**json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise RunError(f"{run_dir} is not a training.distill run folder ({exc})") from exc


def config_command(config: Config) -> str:
    """The command line that repeats ``config`` (machine-specific paths left out)."""
    defaults = Config()
    parts: list[str] = []
    for f in fields(Config):
        value = getattr(config, f.name)
        if value == getattr(defaults, f.name) or f.name in LOCAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return "python -m training.distill " + shlex.join(parts)
