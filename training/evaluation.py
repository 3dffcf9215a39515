"""Honest evaluation on full test images.

Every method sees the degraded test image (the whole image, not patches) and is scored
against the ground truth with PSNR and SSIM (:mod:`training.metrics`). The degraded input
itself is always the first row ("identity"), and every other row carries its gain over it:
on our photos the blurred input alone already scores SSIM ~0.92, so a bare SSIM says little.

``python -m training.evaluate --run runs/x`` (:mod:`training.evaluate`) re-evaluates a
finished or interrupted run from its best checkpoints.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from sharpcam.atomic import atomic_path, atomic_write_text
from training.data import read_rgb
from training.metrics import image_scores
from training.modes import DegradationLike, model_scale, upscale

log = logging.getLogger(__name__)

Method = Callable[[np.ndarray], np.ndarray]
"""A sharpener under test: degraded ``HxWx3 uint8`` RGB in, same shape out."""

#: PNG encoder settings for showcase files: they are committed, so size matters.
PNG_SMALLEST = [cv2.IMWRITE_PNG_COMPRESSION, 9]

#: How the identity row (the degraded input itself) is labelled for readers.
IDENTITY_LABEL = "degraded input (identity)"


def label(method: str) -> str:
    """The display name of a method."""
    return IDENTITY_LABEL if method == "identity" else method


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad ``(N, C, H, W)`` on the bottom/right to multiples of ``multiple``.

    Returns the padded tensor and the original ``H, W`` to crop back to.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    return x, h, w


class TorchMethod:
    """Run a ``(N,3,H,W) -> (N,3,sH,sW)`` model (scale ``s``, see
    :func:`training.modes.model_scale`) on one uint8 image (pad to 8, crop back)."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu") -> None:
        self.model = model.eval()
        self.device = torch.device(device)
        self.scale = model_scale(model)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        x = x.permute(2, 0, 1)[None].float().div_(255.0)
        x, h, w = pad_to_multiple(x)
        with torch.inference_mode():
            y = self.model(x)[..., : h * self.scale, : w * self.scale]
        y = y[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        return y.cpu().numpy()


class TeacherMethod:
    """The frozen teacher on one uint8 image, in overlapping tiles to bound memory; with
    ``factor`` > 1 it is given the input's bicubic upscale (Restormer in ``x2`` mode)."""

    def __init__(self, teacher: object, tile: int = 512, factor: int = 1) -> None:
        self.teacher = teacher
        self.tile = tile
        self.factor = factor

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = upscale(np.ascontiguousarray(image), self.factor)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        y = self.teacher(x, tile=self.tile)  # type: ignore[operator]
        return y[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


@dataclass(frozen=True)
class Row:
    """Mean scores of one method over the test images."""

    method: str
    psnr: float
    ssim: float
    d_psnr: float  # gain over the degraded input, dB
    d_ssim: float
    ms_per_mp: float  # median wall time per megapixel on the evaluation device
    images: int


@dataclass
class Evaluation:
    """All the figures of one evaluation."""

    rows: list[Row]
    per_image: dict[str, dict[str, tuple[float, float]]]  # image -> method -> (psnr, ssim)
    crops: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    device: str = "cpu"

    def row(self, method: str) -> Row:
        return next(r for r in self.rows if r.method == method)

    def table(self) -> str:
        """A markdown table, identity first."""
        lines = [
            "| method | PSNR dB | SSIM | gain PSNR dB | gain SSIM | ms/MP |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {label(r.method)} | {r.psnr:.2f} | {r.ssim:.4f} | {r.d_psnr:+.2f} | "
                f"{r.d_ssim:+.4f} | {r.ms_per_mp:.0f} |"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "per_image": self.per_image,
            "device": self.device,
        }


def detail_crop(image: np.ndarray, size: int = 160) -> tuple[int, int]:
    """Top-left of the ``size`` square with the most edge energy (a deterministic crop)."""
    h, w = image.shape[:2]
    if h <= size or w <= size:
        return 0, 0
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    integral = cv2.integral(energy)
    sums = (
        integral[size:, size:]
        - integral[:-size, size:]
        - integral[size:, :-size]
        + integral[:-size, :-size]
    )
    step = size // 4
    sub = sums[::step, ::step]
    y, x = np.unravel_index(int(np.argmax(sub)), sub.shape)
    return int(y * step), int(x * step)


def evaluate(
    methods: dict[str, Method],
    folder: Path,
    names: Sequence[str],
    degradation: DegradationLike,
    *,
    showcase: Sequence[str] = (),
    crop: int = 160,
    device: str = "cpu",
    scale: int = 1,
) -> Evaluation:
    """Score ``methods`` (plus the identity) on the full test images ``names``.

    Args:
        methods: name -> sharpener; "identity" (the degraded input) is added first.
        folder: data folder; names: test image file names.
        degradation: what turns a ground-truth image into the input (``scale`` times
            smaller than it).
        showcase: names whose detail crops are kept for the before/after figure.
        scale: 2 in ``x2`` mode: every method maps the half-size input to the full size,
            and the identity is the input's bicubic upscale.

    Returns:
        An :class:`Evaluation` whose rows are in the order identity, then ``methods``.
    """
    all_methods: dict[str, Method] = {"identity": lambda image: upscale(image, scale), **methods}
    per_image: dict[str, dict[str, tuple[float, float]]] = {}
    times: dict[str, list[float]] = {name: [] for name in all_methods}
    crops: dict[str, dict[str, np.ndarray]] = {}
    keep = set(showcase)
    for name in tqdm(names, desc="evaluate", unit="img", file=sys.stderr):
        gt = read_rgb(folder / name)
        if gt is None:
            raise ValueError(f"test image {folder / name} cannot be decoded")
        degraded = degradation(gt)
        mp = gt.shape[0] * gt.shape[1] / 1e6
        per_image[name] = {}
        if name in keep:
            y, x = detail_crop(gt, crop)
            crops[name] = {"ground truth": gt[y : y + crop, x : x + crop].copy()}
        for method, fn in all_methods.items():
            t0 = time.perf_counter()
            out = fn(degraded)
            times[method].append((time.perf_counter() - t0) * 1000 / mp)
            per_image[name][method] = image_scores(out, gt)
            if name in keep:
                crops[name][method] = out[y : y + crop, x : x + crop].copy()
    base_p = statistics.fmean(per_image[n]["identity"][0] for n in names)
    base_s = statistics.fmean(per_image[n]["identity"][1] for n in names)
    rows = []
    for method in all_methods:
        p = statistics.fmean(per_image[n][method][0] for n in names)
        s = statistics.fmean(per_image[n][method][1] for n in names)
        ms = statistics.median(times[method])
        rows.append(Row(method, p, s, p - base_p, s - base_s, ms, len(names)))
    return Evaluation(rows, per_image, crops, device)


def _label(tile: np.ndarray, text: str, scale: int) -> np.ndarray:
    big = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    bar = np.full((28, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, big])


def save_showcase(
    evaluation: Evaluation, out_dir: Path, order: Sequence[str], *, scale: int = 2
) -> list[Path]:
    """Write one before/after/ground-truth PNG per showcase image, and ``showcase.png``
    (the first four stacked) in ``out_dir``; returns the written paths."""
    folder = out_dir / "showcase"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    strips: list[np.ndarray] = []
    for name, tiles in evaluation.crops.items():
        columns = [m for m in order if m in tiles] + ["ground truth"]
        strip = np.hstack(
            [_label(tiles[m], label(m).split(" (identity)")[0], scale) for m in columns]
        )
        path = folder / f"{Path(name).stem}.png"
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), PNG_SMALLEST)
        written.append(path)
        if len(strips) < 4:
            strips.append(strip)
    if strips:
        width = max(s.shape[1] for s in strips)
        sheet = np.vstack([np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0))) for s in strips])
        path = out_dir / "showcase.png"
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), PNG_SMALLEST)
        written.append(path)
    return written


def write_report(
    evaluation: Evaluation, out_dir: Path, *, title: str, facts: dict[str, object]
) -> None:
    """``report.md`` (facts + table) and ``report.json`` (everything) in ``out_dir``."""
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += [
        "",
        f"Full test images ({evaluation.rows[0].images}), RGB, data range 1; SSIM is "
        "pytorch_msssim's (11x11 Gaussian, sigma 1.5); outputs quantised to 8 bits; "
        f"timing on {evaluation.device}.",
        "",
        evaluation.table(),
        "",
    ]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    payload = {"title": title, "facts": facts, **evaluation.to_json()}
    atomic_write_text(out_dir / "report.json", json.dumps(payload, indent=1, default=str) + "\n")
