"""Learnability check for the design: do the candidate students learn at all, quickly?

``python -m training.design_learn --data PHOTOS`` trains each named student for a few
hundred Adam steps (L1 to the ground truth, no teacher) on small patches of a subset of
training half A (split as :mod:`training.data` does, seed 42) and reports PSNR on
patches of half B: the degraded input (``restore``: the seed degradation; ``x2``: the
seed's x1/2 INTER_LINEAR frame, whose baseline is the bicubic x2 upsample) beside the
model, and the gain. A check that the architecture trains, not a result: the lead's full
runs make the shipped figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from training.data import DataError, PatchSet, make_split
from training.degradations import get_degradation
from training.students import (
    STUDENTS,
    ResidualStudent,
    StridedStudent,
    build_student,
    macs_per_pixel,
)


def candidate(spec: str) -> torch.nn.Module:
    """A registered name, ``strided:W,D,U,S`` (:class:`StridedStudent`) or ``residual:W,D``."""
    kind, _, args = spec.partition(":")
    if kind == "strided" and args:
        return StridedStudent(*(int(a) for a in args.split(",")))
    if kind == "residual" and args:
        return ResidualStudent(*(int(a) for a in args.split(",")))
    return build_student(spec)


def pairs(patches: PatchSet, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(degraded inputs, ground truths)`` as float tensors in ``[0, 1]``."""
    seed = get_degradation("seed")
    inputs, truths = [], []
    for patch in patches:
        h, w = patch.shape[:2]
        if scale == 1:
            inputs.append(seed(np.ascontiguousarray(patch)))
        else:
            inputs.append(cv2.resize(patch, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR))
        truths.append(patch)

    def stack(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0

    return stack(inputs), stack(truths)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of ``a`` against ``b`` (both in ``[0, 1]``), pooled over all pixels."""
    return float(10 * torch.log10(1.0 / (a - b).pow(2).mean()))


@torch.no_grad()
def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    out = torch.cat([model(x[i : i + 16]).clamp(0, 1) for i in range(0, len(x), 16)])
    model.train()
    return psnr((out * 255).round() / 255, y)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.design_learn``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.design_learn", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder of training photos")
    parser.add_argument(
        "--students", default="residual,fast", help="names or strided:W,D,U,S, separated by ;"
    )
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (default: 300)")
    parser.add_argument("--batch", type=int, default=8, help="patches per step (default: 8)")
    parser.add_argument("--patch", type=int, default=96, help="patch side (default: 96)")
    parser.add_argument("--images", type=int, default=12, help="training images (default: 12)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.students.split(";") if n.strip()]
    if bad := [n for n in names if n not in STUDENTS and ":" not in n]:
        print(
            f"error: unknown student {bad[0]!r}: choose from {', '.join(STUDENTS)} "
            "or strided:W,D,U,S"
        )
        return 2
    try:
        split = make_split(args.data)
    except DataError as exc:
        print(f"error: {exc}")
        return 2
    torch.set_num_threads(2)
    size = args.patch
    train = PatchSet(args.data, split.train_a[: args.images], split.sha256, size=size, stride=size)
    val = PatchSet(args.data, split.train_b[:6], split.sha256, size=size, stride=size, limit=64)
    print(
        f"{len(train)} training patches ({args.images} images of half A), {len(val)} "
        f"validation patches (half B), {size}px, {args.steps} steps of {args.batch}"
    )
    print(
        "| student | MACs/px | input PSNR | model PSNR | gain | s |\n|---|---:|---:|---:|---:|---:|"
    )
    for name in names:
        torch.manual_seed(0)
        model = candidate(name)
        scale = int(getattr(model, "scale", 1))
        tx, ty = pairs(train, scale)
        vx, vy = pairs(val, scale)
        base = vx if scale == 1 else candidate(name).eval()(vx)  # untrained: bicubic
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for step in tqdm(range(args.steps), desc=name, unit="step", leave=False):
            pick = torch.from_numpy(rng.choice(len(tx), args.batch, replace=False))
            lr = args.lr * 0.5 * (1 + np.cos(np.pi * step / args.steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = (model(tx[pick]) - ty[pick]).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - t0
        before = psnr((base.clamp(0, 1) * 255).round() / 255, vy)
        after = score(model, vx, vy)
        print(
            f"| {name} | {macs_per_pixel(model) / 1e3:.2f}k | {before:.2f} | {after:.2f} | "
            f"{after - before:+.2f} | {seconds:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
