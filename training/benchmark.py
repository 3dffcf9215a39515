"""Benchmark: training throughput and ONNX Runtime CPU time per 720p frame.

``python -m training.benchmark`` prints two tables (median and p95 over timed runs, after
untimed warm-up runs):

* training steps of a student on 256x256 patches (forward, loss, backward, Adam step),
  as patches per second, per batch size, on the device training would use;
* the shipped ensemble (``models/sharpcam.onnx``) on a 1280x720 frame through the
  runtime's engine on ONNX Runtime's CPU provider: model ms and total ms per frame.

It is a benchmark, not a test: figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sharpcam.contract import default_model_path
from training.students import STUDENTS, build_student, macs_per_pixel


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """``(median, p95)`` of ``samples``."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def timed(
    fn: Callable[[], object], repeat: int, warmup: int, sync: Callable[[], None]
) -> list[float]:
    """Wall-clock milliseconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def training_step(student: str, batch: int, device: torch.device) -> Callable[[], None]:
    """One training step of a fresh ``student`` on a random batch of 256x256 patches."""
    torch.manual_seed(0)
    model = build_student(student).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, 256, 256, device=device)
    y = torch.rand(batch, 3, 256, 256, device=device)

    def step() -> None:
        loss = 0.1 * (model(x) - y).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_training(
    student: str, batch_sizes: Sequence[int], repeat: int, device: torch.device
) -> list[str]:
    """Markdown rows: batch size, step ms (median, p95), patches/s."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for batch in batch_sizes:
        median, p95 = percentiles(timed(training_step(student, batch, device), repeat, 3, sync))
        rows.append(f"| {batch} | {median:.1f} | {p95:.1f} | {batch * 1e3 / median:.1f} |")
    return rows


def bench_onnx_cpu(model: Path, repeat: int, threads: int | None) -> list[str]:
    """Markdown rows for a 1280x720 frame on the CPU provider: model ms and total ms."""
    from sharpcam.bench import synthetic_frame
    from sharpcam.engine import Engine

    engine = Engine(model, provider="cpu", threads=threads)
    frame = synthetic_frame(1280, 720)
    model_ms: list[float] = []

    def run() -> None:
        engine.process(frame)
        model_ms.append(engine.last_ms)

    total = timed(run, repeat, 3, lambda: None)
    model_ms = model_ms[3:]
    (m_med, m_p95), (t_med, t_p95) = percentiles(model_ms), percentiles(total)
    return [
        f"| model (ONNX Runtime session) | {m_med:.1f} | {m_p95:.1f} | {1e3 / m_med:.1f} |",
        f"| total (with conversion, padding) | {t_med:.1f} | {t_p95:.1f} | {1e3 / t_med:.1f} |",
    ]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.benchmark``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.benchmark", description=__doc__)
    parser.add_argument("--student", choices=sorted(STUDENTS), default="residual")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated (default: 1,8)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs (default: 30)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--device", default="auto", help="training device (default: auto)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model = args.model or default_model_path()
    if not model.is_file():
        print(f"error: model {model} does not exist: pass --model PATH", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    cost = macs_per_pixel(build_student(args.student)) / 1e3
    print(
        f"training: {args.student} student ({cost:.1f}k MACs/pixel), 256x256 patches, "
        f"{device}, {torch.get_num_threads()} threads, {args.repeat} steps after 3 warm-up"
    )
    print("| batch | step ms (median) | step ms (p95) | patches/s |\n|---:|---:|---:|---:|")
    print("\n".join(bench_training(args.student, sizes, args.repeat, device)))
    print(f"\nONNX Runtime CPU, {model}, 1280x720 frame, {args.repeat} runs after 3 warm-up")
    print("| what | ms (median) | ms (p95) | fps |\n|---|---:|---:|---:|")
    print("\n".join(bench_onnx_cpu(model, args.repeat, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
