"""The training loop of one student, nanoGPT style: plain functions and one linear loop.

:func:`train_student` trains student A on half A (or B on B), validating each epoch on a
fixed sample of the other half, and resumes from the student's ``last.pt`` when present:
the patch order and every degradation depend only on (seed, epoch, index), so an
interrupted and resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from training.batches import (
    half_patches,
    teacher_feed,
    teacher_key,
    to_batch,
    to_batch_float,
)
from training.calldata import MixedInputs, seed_lr
from training.checkpoints import load_checkpoint, save_checkpoint, write_history
from training.config import Config, RunError
from training.data import PatchSet, Split
from training.degradations import get_degradation
from training.init_weights import initial_state
from training.losses import DistillLoss, temporal_loss
from training.metrics import ssim
from training.modes import DegradationLike
from training.students import build_student, student_kwargs
from training.world import World

log = logging.getLogger("training.distill")

#: Random-stream index for validation degradations (training uses the epoch number).
VALIDATION_STREAM = 1_000_000


def get_lr(config: Config, step: int, total: int) -> float:
    """Learning rate at global ``step`` of ``total`` (nanoGPT style: a plain function)."""
    if config.lr_schedule == "constant" or total <= 1:
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def degrade(
    degradation: DegradationLike, patch: np.ndarray, seed: int, epoch: int, index: int
) -> np.ndarray:
    """Degrade one patch with a generator fixed by (seed, epoch, index): reproducible and
    identical after a resume, whatever the order."""
    return degradation(np.ascontiguousarray(patch), np.random.default_rng([seed, epoch, index]))


def training_pair(
    inputs: MixedInputs, patches: PatchSet, seed: int, stream: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(input, ground truth)`` of training index ``index``: a call frame of the cache, or
    the patch degraded per image (:func:`degrade`; the half-size patch in ``x2`` mode)."""
    pick = inputs.pick(index, stream)
    if pick.call_index is not None:
        return inputs.call_pair(pick)
    gt = np.ascontiguousarray(patches[index])
    if inputs.mode == "x2":
        return seed_lr(gt), gt
    assert pick.degradation is not None
    return degrade(get_degradation(pick.degradation), gt, seed, stream, index), gt


def teacher_target(
    cache: typing.Any,
    feed: Callable[[np.ndarray], np.ndarray],
    inputs: MixedInputs,
    patches: PatchSet,
    config: Config,
    stream: int,
    index: int,
    degraded: np.ndarray,
) -> np.ndarray:
    """The frozen teacher's output for training index ``index``: from the disk cache for a
    photo patch; computed now for a frame of the call cache (which pair a call pick gives
    changes with the epoch, so there is no per-patch key; :func:`training.config.
    check_degradation` admits call parts only with a sharpcam model as the teacher, which
    costs a few milliseconds per frame)."""
    if inputs.pick(index, stream).call_index is not None:
        return cache.teacher.enhance_uint8(feed(degraded)[None])[0]
    return cache.get(teacher_key(patches, index, config), feed(degraded))


def epoch_order(n: int, seed: int, epoch: int, world: World) -> np.ndarray:
    """This process's share of the epoch's shuffled patch order."""
    order = np.random.RandomState([seed, epoch]).permutation(n)
    return order[world.rank :: world.size]


def split_batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@dataclass
class Validation:
    """Fixed degraded/ground-truth patch pairs from the other half."""

    degraded: torch.Tensor
    gt: torch.Tensor
    identity_psnr: float
    identity_ssim: float

    @classmethod
    def build(cls, patches: PatchSet, inputs: MixedInputs, seed: int, device: torch.device):
        pairs = [
            training_pair(inputs, patches, seed, VALIDATION_STREAM, i) for i in range(len(patches))
        ]
        degraded = to_batch([d for d, _ in pairs], device)
        gt = to_batch([g for _, g in pairs], device)
        seen = degraded  # the identity: in x2 mode, the input upscaled as a player does
        if seen.shape != gt.shape:
            seen = F.interpolate(seen, size=gt.shape[-2:], mode="bicubic").clamp(0, 1)
        mse = (seen.double() - gt.double()).pow(2).mean()
        return cls(degraded, gt, mse_psnr(mse), float(ssim(seen, gt).mean()))

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


def train_student(
    which: str,
    config: Config,
    split: Split,
    world: World,
    teacher_cache: typing.Any,
    perceptual: nn.Module | None,
    call_root: Path | None = None,
) -> None:
    """Train student ``which`` ("a" or "b"), resuming from its ``last.pt`` if present.

    ``call_root``: the cache root holding the call sequences (needed when the
    ``--degradation`` mix has a call part; :func:`training.calldata.fill_call_cache`).
    """
    out = Path(config.out) / f"student_{which}"
    out.mkdir(parents=True, exist_ok=True)
    device = world.device
    root = call_root if call_root is not None else Path(config.out)
    inputs = MixedInputs.for_half(config, split, which, root)
    other = "b" if which == "a" else "a"
    train = half_patches(config, split, which)
    if not len(train):
        raise RunError(
            f"half {which.upper()} has no {config.patch_size}px patch: use smaller --patch-size"
        )
    val = None
    if world.main:
        val_set = half_patches(config, split, other, validation=True)
        val_inputs = MixedInputs.for_half(config, split, other, root)
        val = Validation.build(val_set, val_inputs, config.seed, device)
    feed = teacher_feed(config.mode, teacher_cache.teacher if teacher_cache else None)
    salt = 0 if which == "a" else 1
    torch.manual_seed(config.seed + salt)
    last = out / "last.pt"
    model = build_student(config.student, **config.student_args)
    if config.init is not None and not last.exists():
        model.load_state_dict(initial_state(config.init, which, model))
        if world.main:
            log.info("student %s: starting from the weights in %s", which.upper(), config.init)
    model = model.to(device)
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
        plan = split_batches(order, config.batch_size)
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
                pairs = [training_pair(inputs, train, config.seed, epoch, int(i)) for i in indices]
                degs, gts = [d for d, _ in pairs], [g for _, g in pairs]
                target = None
                if teacher_cache is not None:
                    target = to_batch_float(
                        [
                            teacher_target(teacher_cache, feed, inputs, train, config, epoch, i, d)
                            for i, d in zip(indices.tolist(), degs, strict=True)
                        ],
                        device,
                    )
                x, gt = to_batch(degs, device), to_batch(gts, device)
                for group in optimizer.param_groups:
                    group["lr"] = get_lr(config, epoch * len(plan) + step, total_steps)
                if weights.temporal:  # consecutive call frames ride in the same forward
                    quads = [inputs.consecutive(int(i), epoch) for i in indices]
                    frames = [q[k] for k in (0, 2) for q in quads]
                    truth = to_batch([q[k] for k in (1, 3) for q in quads], device)
                    both = net(torch.cat([x, to_batch(frames, device)]))
                    loss, parts = loss_fn(both[: len(x)], gt, target)
                    n = len(quads)
                    prev, cur = both[len(x) : len(x) + n], both[len(x) + n :]
                    term = temporal_loss(prev, cur, truth[:n], truth[n:])
                    loss = loss + weights.temporal * term
                    parts["temporal"] = float(term.detach())
                else:
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
