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
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from sharpcam.atomic import atomic_path, atomic_write_text
from training.baselines import tune_unsharp
from training.data import DataError, PatchSet, Split, make_split, read_rgb
from training.degradations import DEGRADATIONS, Degradation, get_degradation
from training.evaluate import (
    Evaluation,
    Row,
    TeacherMethod,
    TorchMethod,
    evaluate,
    save_showcase,
    write_report,
)
from training.export import ExportError, export_model
from training.losses import DistillLoss, LossWeights
from training.metrics import ssim
from training.plots import training_curves
from training.students import (
    STUDENTS,
    Ensemble,
    build_student,
    count_parameters,
    macs_per_pixel,
    student_kwargs,
)
from training.weights import WeightsError, default_cache_dir

log = logging.getLogger("training.distill")

ENSEMBLE = "ensemble (A+B)/2"
#: Random-stream index for validation degradations (training uses the epoch number).
VALIDATION_STREAM = 1_000_000


class RunError(RuntimeError):
    """A run cannot start or continue; the message names the problem and the fix."""


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Defaults are the seed write-up's where it gives one."""

    data: str = field(default="", metadata={"help": "folder of training photos"})
    out: str = field(default="runs/sharpcam", metadata={"help": "run folder"})
    student: str = field(
        default="residual", metadata={"help": f"architecture: {', '.join(STUDENTS)}"}
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
        default="seed", metadata={"help": f"input degradation: {', '.join(DEGRADATIONS)}"}
    )
    teacher: str | None = field(
        default=None, metadata={"help": "Restormer checkpoint (default: download to cache)"}
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
        return LossWeights(
            teacher=0.0 if self.no_teacher else self.w_teacher,
            gt=self.w_gt,
            perceptual=0.0 if self.no_perceptual else self.w_perceptual,
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


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
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
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {getattr(defaults, f.name)})"
        if hints[f.name] is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t)
            parser.add_argument(
                flag, type=kind, default=None, help=help_text, metavar=f.name.upper()
            )
    return parser


def parse_config(argv: list[str] | None) -> tuple[Config, bool, dict[str, object]]:
    """Config from preset + command line; returns ``(config, resume, explicit options)``."""
    args = vars(build_parser().parse_args(argv))
    resume = bool(args.pop("resume"))
    preset = args.pop("preset")
    explicit = {k: v for k, v in args.items() if v is not None}
    settings: dict[str, object] = dict(PRESETS[preset]) if preset else {}
    settings.update(explicit)
    return replace(Config(), **settings), resume, explicit


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.distill``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config, resume, explicit = parse_config(argv)
    command = "python -m training.distill " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return run(config, resume=resume, explicit=explicit, command=command)
    except (RunError, DataError, WeightsError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted: progress is saved in {config.out}; continue with the same command "
            "and --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class World:
    """Where this process sits in a (possibly single-process) distributed run."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def setup_world(config: Config) -> World:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(0, 1, pick_device(config.device))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, device)


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


def check_config(config: Config) -> None:
    if not config.data:
        raise RunError("no data folder given: pass --data PHOTOS_FOLDER")
    if config.student not in STUDENTS:
        raise RunError(f"unknown --student {config.student!r}: choose one of {', '.join(STUDENTS)}")
    if config.degradation not in DEGRADATIONS:
        raise RunError(
            f"unknown --degradation {config.degradation!r}: choose one of {', '.join(DEGRADATIONS)}"
        )
    for name in ("epochs", "batch_size", "patch_size", "stride", "val_patches"):
        if getattr(config, name) < 1:
            raise RunError(f"--{name.replace('_', '-')} must be at least 1")
    if config.lr_schedule not in LR_SCHEDULES:
        raise RunError(
            f"unknown --lr-schedule {config.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}"
        )
    if config.patch_size % 8:
        raise RunError("--patch-size must be a multiple of 8")
    if not config.loss_weights.active():
        raise RunError("every loss term is off or has weight 0: nothing to train on")


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
    saved = Config(**json.loads(saved_path.read_text()))
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


def cache_root(config: Config) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def setup_teacher(config: Config, device: torch.device):  # -> TeacherCache | None
    """The teacher-output cache, or ``None`` when the teacher term is off."""
    from training.teacher import TeacherCache, load_teacher

    if config.no_teacher:
        log.info(
            "teacher: off (--no-teacher): no distillation term, students learn from ground truth"
        )
        return None
    try:
        teacher = load_teacher(config.teacher, cache_dir=cache_root(config), device=device)
    except WeightsError as exc:
        raise WeightsError(
            f"teacher unavailable: {exc} (or train without it: --no-teacher)"
        ) from exc
    log.info("teacher: Restormer defocus, sha256 %s..., frozen", teacher.checkpoint_hash[:12])
    return TeacherCache(cache_root(config) / "teacher-outputs", teacher)


def setup_perceptual(config: Config, device: torch.device) -> nn.Module | None:
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
    return PerceptualLoss(features).to(device)


# --------------------------------------------------------------------------- training

LR_SCHEDULES = ("constant", "cosine")


def get_lr(config: Config, step: int, total: int) -> float:
    """Learning rate at global ``step`` of ``total`` (nanoGPT style: a plain function)."""
    if config.lr_schedule == "constant" or total <= 1:
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def to_batch(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``HxWx3 uint8`` images -> ``(N, 3, H, W)`` float32 in ``[0, 1]`` on ``device``."""
    array = torch.from_numpy(np.stack(images)).to(device)
    return array.permute(0, 3, 1, 2).float().div_(255.0)


def degrade(
    degradation: Degradation, patch: np.ndarray, seed: int, epoch: int, index: int
) -> np.ndarray:
    """Degrade one patch with a generator fixed by (seed, epoch, index): reproducible and
    identical after a resume, whatever the order."""
    return degradation(np.ascontiguousarray(patch), np.random.default_rng([seed, epoch, index]))


def epoch_order(n: int, seed: int, epoch: int, world: World) -> np.ndarray:
    """This process's share of the epoch's shuffled patch order."""
    order = np.random.RandomState([seed, epoch]).permutation(n)
    return order[world.rank :: world.size]


def batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@dataclass
class Validation:
    """Fixed degraded/ground-truth patch pairs from the other half."""

    degraded: torch.Tensor
    gt: torch.Tensor
    identity_psnr: float
    identity_ssim: float

    @classmethod
    def build(cls, patches: PatchSet, degradation: Degradation, seed: int, device: torch.device):
        gts = [np.ascontiguousarray(p) for p in patches]
        degs = [degrade(degradation, g, seed, VALIDATION_STREAM, i) for i, g in enumerate(gts)]
        degraded, gt = to_batch(degs, device), to_batch(gts, device)
        mse = (degraded.double() - gt.double()).pow(2).mean()
        return cls(degraded, gt, mse_psnr(mse), float(ssim(degraded, gt).mean()))

    def score(self, model: nn.Module, chunk: int = 16) -> tuple[float, float]:
        """``(PSNR, SSIM)`` of ``model`` on the pairs (clamped output).

        PSNR is taken over all pairs' pixels at once (as if they were one image): a mean of
        per-patch PSNRs would be ruled by flat patches, where any change costs many dB.
        SSIM is the mean over patches.
        """
        was_training = model.training
        model.eval()
        squared, s = [], []
        with torch.no_grad():
            for i in range(0, len(self.gt), chunk):
                out = model(self.degraded[i : i + chunk]).clamp(0, 1)
                squared.append((out.double() - self.gt[i : i + chunk].double()).pow(2).mean())
                s.append(ssim(out, self.gt[i : i + chunk]))
        model.train(was_training)
        return mse_psnr(torch.stack(squared).mean()), float(torch.cat(s).mean())


def mse_psnr(mse: torch.Tensor) -> float:
    """PSNR in dB of a mean squared error on data in ``[0, 1]``."""
    return float(10.0 * torch.log10(1.0 / mse))


def save_checkpoint(path: Path, payload: dict[str, object]) -> None:
    """``torch.save`` through a temporary file (a kill leaves the previous file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, typing.Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RunError(
            f"checkpoint {path} is unreadable ({exc}): delete it to restart that student"
        ) from exc


HISTORY_FIELDS = (
    "epoch",
    "loss",
    "loss_teacher",
    "loss_gt",
    "loss_perceptual",
    "val_psnr",
    "val_ssim",
    "val_identity_psnr",
    "val_identity_ssim",
    "patches_per_s",
    "seconds",
)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def train_student(
    which: str,
    config: Config,
    split: Split,
    world: World,
    teacher_cache: typing.Any,
    perceptual: nn.Module | None,
) -> None:
    """Train student ``which`` ("a" or "b"), resuming from its ``last.pt`` if present."""
    out = Path(config.out) / f"student_{which}"
    out.mkdir(parents=True, exist_ok=True)
    device = world.device
    degradation = get_degradation(config.degradation)
    other = "b" if which == "a" else "a"
    train = half_patches(config, split, which)
    if not len(train):
        raise RunError(
            f"half {which.upper()} has no {config.patch_size}px patch: use smaller --patch-size"
        )
    val = None
    if world.main:
        val_set = half_patches(config, split, other, validation=True)
        val = Validation.build(val_set, degradation, config.seed, device)
    salt = 0 if which == "a" else 1
    torch.manual_seed(config.seed + salt)
    model = build_student(config.student, **config.student_args).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weights = config.loss_weights
    loss_fn = DistillLoss(weights, perceptual)

    state: dict[str, typing.Any] = {
        "epoch": 0,
        "step": 0,
        "sums": {},
        "history": [],
        "best_ssim": -1.0,
        "seconds": 0.0,
    }
    last = out / "last.pt"
    if last.exists():
        saved = load_checkpoint(last)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        if world.main:
            log.info(
                "student %s: resuming at epoch %d, step %d",
                which.upper(),
                state["epoch"] + 1,
                state["step"],
            )
    net: nn.Module = model
    if world.size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint(epoch: int, step: int, sums: dict[str, float]) -> None:
        if not world.main:
            return
        state.update(epoch=epoch, step=step, sums=dict(sums))
        save_checkpoint(
            last,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state,
                "student": {"name": config.student, "kwargs": student_kwargs(model)},
                "config": asdict(config),
            },
        )

    label = f"student {which.upper()}"
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        order = epoch_order(len(train), config.seed + 1000 * salt, epoch, world)
        plan = batches(order, config.batch_size)
        total_steps = config.epochs * len(plan)
        sums: dict[str, float] = dict(state["sums"]) if state["step"] else {}
        start_step = state["step"]
        t0 = time.perf_counter()
        net.train()
        bar = tqdm(
            range(start_step, len(plan)),
            desc=f"{label} | epoch {epoch + 1}/{config.epochs}",
            unit="step",
            file=sys.stderr,
            disable=not world.main,
            leave=False,
        )
        step = start_step
        try:
            for step in bar:
                indices = plan[step]
                gts = [np.ascontiguousarray(train[i]) for i in indices]
                degs = [
                    degrade(degradation, g, config.seed, epoch, int(i))
                    for g, i in zip(gts, indices, strict=True)
                ]
                target = None
                if teacher_cache is not None:
                    target = to_batch_float(
                        [
                            teacher_cache.get(teacher_key(train, int(i), config), d)
                            for i, d in zip(indices, degs, strict=True)
                        ],
                        device,
                    )
                x, gt = to_batch(degs, device), to_batch(gts, device)
                for group in optimizer.param_groups:
                    group["lr"] = get_lr(config, epoch * len(plan) + step, total_steps)
                loss, parts = loss_fn(net(x), gt, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for k, v in parts.items():
                    sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + v
                sums["steps"] = sums.get("steps", 0.0) + 1
                if world.main and (step + 1) % 20 == 0:
                    bar.set_postfix(loss=f"{sums['loss'] / sums['steps']:.4f}")
                if (step + 1) % config.checkpoint_every == 0:
                    checkpoint(epoch, step + 1, sums)
        except KeyboardInterrupt:
            checkpoint(epoch, step, sums)
            raise
        bar.close()
        seconds = time.perf_counter() - t0
        state["seconds"] += seconds
        world.barrier()
        if world.main:
            assert val is not None
            v_psnr, v_ssim = val.score(model)
            steps = max(1.0, sums.get("steps", 1.0))
            row = {
                "epoch": epoch + 1,
                **{k: v / steps for k, v in sums.items() if k.startswith("loss")},
                "val_psnr": v_psnr,
                "val_ssim": v_ssim,
                "val_identity_psnr": val.identity_psnr,
                "val_identity_ssim": val.identity_ssim,
                "patches_per_s": (len(plan) - start_step)
                * config.batch_size
                * world.size
                / seconds,
                "seconds": seconds,
            }
            state["history"].append(row)
            improved = v_ssim > state["best_ssim"]
            tqdm.write(
                f"{label} | epoch {epoch + 1}/{config.epochs} | loss {row['loss']:.5f} | "
                f"val PSNR {v_psnr:.2f} dB ({v_psnr - val.identity_psnr:+.2f}) "
                f"SSIM {v_ssim:.4f} ({v_ssim - val.identity_ssim:+.4f})"
                f"{' best' if improved else ''} | {row['patches_per_s']:.1f} patches/s",
                file=sys.stderr,
            )
            if improved:
                state["best_ssim"] = v_ssim
                save_checkpoint(
                    out / "best.pt",
                    {
                        "model": model.state_dict(),
                        "student": {"name": config.student, "kwargs": student_kwargs(model)},
                        "epoch": epoch + 1,
                        "val_psnr": v_psnr,
                        "val_ssim": v_ssim,
                        "config": asdict(config),
                    },
                )
            write_history(out / "history.csv", state["history"])
        state["step"] = 0
        checkpoint(epoch + 1, 0, {})
        state["epoch"] = epoch + 1
        world.barrier()


def to_batch_float(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``HxWx3 float32`` images -> ``(N, 3, H, W)`` on ``device``."""
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).contiguous()


def teacher_key(patches: PatchSet, index: int, config: Config) -> str:
    from training.teacher import cache_key

    degradation = get_degradation(config.degradation)
    if not degradation.deterministic:
        raise RunError(
            f"degradation {config.degradation!r} is random: its teacher outputs cannot be "
            "cached per patch; use --no-teacher with it"
        )
    return cache_key(patches.patches[index].key, degradation.name)


def half_patches(config: Config, split: Split, which: str, *, validation: bool = False) -> PatchSet:
    """The patches of half ``which`` ("a" or "b"): its training patches, or with
    ``validation`` the fixed sample that validates the student trained on the other half.

    Training and the teacher cache both call this, so their patch keys always agree.
    """
    return PatchSet(
        Path(split.data_dir),
        split.half(which),
        split.sha256,
        size=config.patch_size,
        stride=config.stride,
        limit=config.val_patches if validation else config.max_patches,
        seed=config.seed + 1 if validation else config.seed,
    )


def fill_teacher_cache(config: Config, split: Split, teacher_cache: typing.Any) -> None:
    """Run the teacher once over every training patch of both halves."""
    degradation = get_degradation(config.degradation)

    def items() -> Iterator[tuple[str, np.ndarray]]:
        for which in ("a", "b"):
            patches = half_patches(config, split, which)
            for i in range(len(patches)):
                degraded = degradation(np.ascontiguousarray(patches[i]))
                yield teacher_key(patches, i, config), degraded

    computed = teacher_cache.precompute(items(), batch_size=8)
    log.info("teacher cache: %d outputs computed, the rest were cached", computed)


# --------------------------------------------------------------------------- finishing


def load_student(path: Path) -> nn.Module:
    saved = load_checkpoint(path)
    model = build_student(saved["student"]["name"], **saved["student"]["kwargs"])
    model.load_state_dict(saved["model"])
    return model.eval()


def evaluate_students(
    config: Config, split: Split, device: torch.device, teacher: typing.Any = None
) -> tuple[Evaluation, dict[str, object]]:
    """Evaluate identity, unsharp mask, A, B, the ensemble (and the teacher) on the test set."""
    run = Path(config.out)
    degradation = get_degradation(config.degradation)
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


def finish_run(config: Config, split: Split, world: World, teacher: typing.Any) -> int:
    """Evaluate, draw, export and describe a trained run; print the summary."""
    run = Path(config.out)
    evaluation, facts = evaluate_students(config, split, world.device, teacher)
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
            "degradation": get_degradation(config.degradation).description,
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
    return to_batch([get_degradation(config.degradation)(image)], torch.device("cpu"))


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


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


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


def config_command(config: Config) -> str:
    defaults = Config()
    parts: list[str] = []
    for f in fields(Config):
        value = getattr(config, f.name)
        if value == getattr(defaults, f.name) or f.name in {"cache_dir", "teacher", "vgg"}:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return "python -m training.distill " + shlex.join(parts)


# --------------------------------------------------------------------------- run


def run(
    config: Config,
    *,
    resume: bool = False,
    explicit: dict[str, object] | None = None,
    command: str = "",
) -> int:
    """The whole recipe (see the module docstring); returns the exit status."""
    out = Path(config.out)
    world = setup_world(config)
    if world.main:
        prepare_folder(out)
    config = load_run_config(config, resume=resume, explicit=explicit or {}, out=out)
    check_config(config)
    if world.main:
        atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1) + "\n")
        if command:
            with open(out / "commands.log", "a") as fh:
                fh.write(command + "\n")
    split_path = out / "split.json"
    if world.main and not split_path.exists():
        split = make_split(
            Path(config.data),
            seed=config.seed,
            test_size=config.test_size,
            showcase=config.showcase,
        )
        split.save(split_path)
    world.barrier()
    split = Split.load(split_path)
    if world.main:
        split.verify(Path(split.data_dir))
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
            split_path,
        )
    teacher_cache = setup_teacher(config, world.device)
    perceptual = setup_perceptual(config, world.device)
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
    world.barrier()
    for which in ("a", "b"):
        if not (out / f"student_{which}" / "done.json").exists():
            train_student(which, config, split, world, teacher_cache, perceptual)
            if world.main:
                atomic_write_text(out / f"student_{which}" / "done.json", "{}\n")
        world.barrier()
    if not world.main:
        return 0
    teacher = teacher_cache.teacher if teacher_cache is not None else None
    return finish_run(config, split, world, teacher)


def saved_run(run_dir: Path) -> tuple[Config, Split]:
    try:
        config = Config(**json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise RunError(f"{run_dir} is not a training.distill run folder ({exc})") from exc
    return replace(config, out=str(run_dir)), Split.load(run_dir / "split.json")


def evaluate_run(run_dir: Path, *, device: str = "auto") -> int:
    """Re-evaluate (and re-export) a run from its best checkpoints."""
    try:
        config, split = saved_run(run_dir)
        world = World(0, 1, pick_device(device))
        return finish_run(config, split, world, None)
    except (RunError, DataError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def export_run(run_dir: Path, out: Path | None) -> int:
    """Export a run's best students to ``out`` (default ``RUN/sharpcam.onnx``)."""
    try:
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
    except (RunError, DataError, ExportError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
