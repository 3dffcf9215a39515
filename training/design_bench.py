"""Design benchmark: candidate student architectures on ONNX Runtime and OpenVINO (CPU).

``python -m training.design_bench`` exports each candidate (untrained weights: speed does
not depend on their values; the zero tail is randomised so nothing is constant-folded) to
ONNX, opens it on every backend that is installed (ONNX Runtime CPU fp32, OpenVINO CPU fp32
and bf16, and, given ``--int8``, the statically quantized graphs of
:mod:`training.quantize` on both), then times all of them **interleaved**: each round runs
every (candidate, backend) once in a fresh random order, so load from other processes
hits all of them alike. It prints median and p95 ms per call and the ratio of each median
to the reference row (the shipped ``residual`` ensemble on ONNX Runtime fp32 at the same
size) in a Markdown table, and writes it as JSON with ``--json``.

Restore candidates run at 1280x720 (and the ensemble also at 640x360); x2 candidates take
640x360 and give 1280x720. Model calls only: the runtime's uint8 <-> float conversion is
the same for every candidate and is timed by ``sharpcam bench``.

Figures, not assertions: they depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from sharpcam.contract import INPUT_NAME
from training.benchmark import percentiles
from training.onnx_io import to_onnx
from training.students import (
    DetailLayer,
    Ensemble,
    ResidualStudent,
    StridedStudent,
    build_student,
    macs_per_pixel,
)

#: name -> (builder, input (width, height)); a builder returns the module to export.
Candidate = tuple[Callable[[], nn.Module], tuple[int, int]]

R720, R360 = (1280, 720), (640, 360)


def _strided(**kwargs: int) -> Callable[[], nn.Module]:
    return lambda: Ensemble([StridedStudent(**kwargs)])


def _named(name: str, copies: int = 1) -> Callable[[], nn.Module]:
    return lambda: Ensemble([build_student(name) for _ in range(copies)])


class DepthwiseStudent(nn.Module):
    """A restore candidate with depthwise-separable middle layers (for timing only)."""

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(12, width, 3, padding=1, bias=False), _leaky()]
        for _ in range(depth):
            layers += [
                nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
                nn.Conv2d(width, width, 1, bias=False),
                _leaky(),
            ]
        layers.append(nn.Conv2d(width, 12, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        self.detail = DetailLayer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.body(nn.functional.pixel_unshuffle(self.detail(x), 2))
        return x + nn.functional.pixel_shuffle(residual, 2)


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.1)


class Upsample(nn.Module):
    """A bare x2 upsample: ``F.interpolate`` bilinear or bicubic (for timing only)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2, mode=self.mode, align_corners=False)


def candidates() -> dict[str, Candidate]:
    """Every architecture the design considered, by name.

    ``unshuffle`` rows are the shipped student's layout (detail layer, pixel-unshuffle,
    :class:`ResidualStudent`); ``strided`` rows fold both into the first convolution
    (:class:`StridedStudent`); ``uU wW dD`` = stride/unshuffle U, width W, depth D.
    """
    return {
        # restore, 1280x720
        "quality: 2 residual": (_named("residual", 2), R720),
        "1 residual": (_named("residual"), R720),
        "unshuffle u2 w16 d3": (lambda: Ensemble([ResidualStudent(16, 3)]), R720),
        "unshuffle depthwise u2 w32 d4": (lambda: Ensemble([DepthwiseStudent(32, 4)]), R720),
        "fast: strided u2 w16 d3": (_named("fast"), R720),
        "strided u2 w16 d4": (_strided(width=16, depth=4), R720),
        "strided u4 w32 d2": (_strided(width=32, depth=2, unshuffle=4), R720),
        "strided u4 w24 d4": (_strided(width=24, depth=4, unshuffle=4), R720),
        "quality: 2 residual 360p": (_named("residual", 2), R360),
        # x2, 640x360 -> 1280x720
        "x2 F.interpolate bilinear": (lambda: Upsample("bilinear"), R360),
        "x2 F.interpolate bicubic": (lambda: Upsample("bicubic"), R360),
        "x2 strided bicubic only (w8 d0)": (_strided(width=8, depth=0, scale=2), R360),
        "x2 quality: 2 strided u2 w64 d2": (_named("residual-x2", 2), R360),
        "x2 2 strided u2 w48 d4": (
            lambda: Ensemble([StridedStudent(48, 4, 2, 2) for _ in range(2)]),
            R360,
        ),
        "x2 2 strided u2 w32 d4": (
            lambda: Ensemble([StridedStudent(32, 4, 2, 2) for _ in range(2)]),
            R360,
        ),
        "x2 strided u2 w32 d3": (_strided(width=32, depth=3, scale=2), R360),
        "x2 strided u2 w32 d2": (_strided(width=32, depth=2, scale=2), R360),
        "x2 strided u2 w24 d4": (_strided(width=24, depth=4, scale=2), R360),
    }


def randomised(model: nn.Module) -> nn.Module:
    """``model`` with small random weights everywhere (so no branch is constant zero)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn_like(p))
    return model.eval()


@dataclass(frozen=True)
class Timed:
    """One (candidate, backend) with its input."""

    candidate: str
    backend: str
    run: Callable[[], object]


def open_backends(
    path: Path, size: tuple[int, int], int8: dict[str, Path]
) -> dict[str, Callable[[], object]]:
    """``backend -> callable`` running ``path`` (and its int8 twins) on a random frame."""
    w, h = size
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    runs: dict[str, Callable[[], object]] = {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    for label, model in (("ORT fp32", path), *((f"ORT {k}", v) for k, v in int8.items())):
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        runs[label] = lambda s=session: s.run(None, {INPUT_NAME: x})
    try:
        import openvino as ov
    except ImportError:
        return runs
    core = ov.Core()
    variants = [("OV fp32", path, "f32"), ("OV bf16", path, "bf16")]
    variants += [(f"OV {k} (rest bf16)", v, "bf16") for k, v in int8.items()]
    for label, model, precision in variants:
        read = core.read_model(str(model))
        read.reshape({INPUT_NAME: [1, 3, h, w]})
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        compiled = core.compile_model(read, "CPU", config)
        request = compiled.create_infer_request()
        runs[label] = lambda r=request: r.infer({0: x})
    return runs


def export_candidate(name: str, build: Callable[[], nn.Module], folder: Path) -> Path:
    """ONNX file of candidate ``name`` in ``folder`` (reused when already there)."""
    path = folder / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")
    if not path.exists():
        model = randomised(build())
        for module in model.modules():
            if isinstance(module, StridedStudent):
                module.fuse()
        proto = to_onnx(model, torch.rand(1, 3, 64, 96))
        onnx.save(proto, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.design_bench``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.design_bench", description=__doc__)
    parser.add_argument("--only", default="", help="candidate names separated by ; (default: all)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (default: 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (default: 3)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the ONNX exports")
    parser.add_argument("--int8", action="store_true", help="also time int8 (training.quantize)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    table = candidates()
    chosen = [n.strip() for n in args.only.split(";") if n.strip()] or list(table)
    unknown = [n for n in chosen if n not in table]
    if unknown:
        print(f"error: unknown candidate {unknown[0]!r}: choose from {', '.join(table)}")
        return 2
    folder = args.cache or Path(tempfile.mkdtemp(prefix="design_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    jobs: list[Timed] = []
    costs: dict[str, float] = {}
    for name in tqdm(chosen, desc="export and compile", unit="model"):
        build, size = table[name]
        costs[name] = macs_per_pixel(build())
        path = export_candidate(name, build, folder)
        int8: dict[str, Path] = {}
        if args.int8:
            from training.quantize import quantize_random

            int8["int8 conv"] = quantize_random(path, size, folder, ("Conv",))
            int8["int8 conv+leaky"] = quantize_random(path, size, folder, ("Conv", "LeakyRelu"))
        for backend, run in open_backends(path, size, int8).items():
            jobs.append(Timed(name, backend, run))
    samples: dict[tuple[str, str], list[float]] = {(j.candidate, j.backend): [] for j in jobs}
    rng = random.Random(0)
    for round_ in tqdm(range(args.warmup + args.rounds), desc="interleaved rounds", unit="round"):
        order = jobs[:]
        rng.shuffle(order)
        for job in order:
            t0 = time.perf_counter()
            job.run()
            if round_ >= args.warmup:
                samples[(job.candidate, job.backend)].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for (name, backend), times in samples.items():
        median, p95 = percentiles(times)
        rows.append(
            {
                "candidate": name,
                "backend": backend,
                "macs_per_pixel": costs[name],
                "median_ms": median,
                "p95_ms": p95,
            }
        )
    refs = {
        size: next(
            (
                r["median_ms"]
                for r in rows
                if r["backend"] == "ORT fp32"
                and table[str(r["candidate"])][1] == size
                and str(r["candidate"]).startswith("quality: 2 residual")
            ),
            None,
        )
        for size in (R720, R360)
    }
    print(
        f"\n{args.rounds} interleaved rounds after {args.warmup} warm-up; ratio = median / "
        "the quality ensemble (2 residual) on ORT fp32 at the same input size"
    )
    print("| candidate | input | MACs/px | backend | ms median | ms p95 | ratio |")
    print("|---|---|---:|---|---:|---:|---:|")
    for row in rows:
        w, h = table[str(row["candidate"])][1]
        ref = refs[(w, h)]
        ratio = f"{float(row['median_ms']) / ref:.2f}" if ref else "-"
        row["ratio"] = ratio
        print(
            f"| {row['candidate']} | {w}x{h} | {float(row['macs_per_pixel']) / 1e3:.2f}k | "
            f"{row['backend']} | {float(row['median_ms']):.1f} | {float(row['p95_ms']):.1f} | "
            f"{ratio} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
