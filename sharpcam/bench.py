"""``sharpcam bench``: how fast each tier runs, per backend and frame size.

For every model tier in ``models/`` (every mode, each tier's ``*.int8.onnx`` twin too, as
row "TIER int8"; or the one ``--model``), every backend
that runs here (ONNX Runtime with each provider that opens, OpenVINO when installed) and
every size (360p, 720p, 1080p; ×2 models at 360p → 720p), it times the whole
``Engine.process`` call — uint8 in, uint8 out, conversion included — and prints a
Markdown table: median and p95 ms, frames per second, multiply-adds per output pixel (the
model's ``sharpcam.macs_per_pixel``) and the share of the CPU's fp32 arithmetic peak
reached, the peak being an estimate from ``/proc/cpuinfo`` (:mod:`sharpcam.machine`).
The variants of one size are timed interleaved, in blocks of a few calls each, so a busy
machine slows them alike: compare them as ratios.

``--io-compare`` times both places the colour and dtype conversion can happen with ONNX
Runtime: on the host with OpenCV, and inside the ONNX graph (a uint8 NHWC wrapper).

``--clip FILE`` adds the end-to-end rate of ``sharpcam --input FILE --output tmp.mp4``
(decode, model, encode) and the share of time outside the model.

Figures, not assertions: nothing here fails because a machine is slow.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sharpcam.backends import BACKENDS
from sharpcam.backends import openvino as ov_backend
from sharpcam.cli import (
    add_log_options,
    make_parser,
    reports_errors,
    setup_logging,
)
from sharpcam.contract import default_model_path
from sharpcam.engine import PROVIDERS, Engine, cpu_count
from sharpcam.errors import ProviderError, UsageError
from sharpcam.machine import Peak, estimate_peak
from sharpcam.models import (
    MODE_SCALES,
    ModelInfo,
    count_macs_per_pixel,
    find_models,
    int8_twin,
    read_info,
)
from sharpcam.probe import synthetic_frame

log = logging.getLogger(__name__)

#: Named frame sizes, ``(width, height)``.
SIZES: dict[str, tuple[int, int]] = {
    "360p": (640, 360),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}


@dataclass(frozen=True)
class Row:
    """One variant (tier × backend) at one size; times of the whole call in ms."""

    tier: str
    mode: str
    backend: str
    size: str
    median: float
    p95: float
    macs_per_pixel: float | None
    out_pixels: int
    macs_counted: bool = False
    """``macs_per_pixel`` was counted from the graph, not read from the metadata."""

    @property
    def fps(self) -> float:
        return 1e3 / self.median if self.median > 0 else float("inf")

    @property
    def gmacs(self) -> float | None:
        """Billions of multiply-adds per second achieved (``None`` without metadata)."""
        if self.macs_per_pixel is None or self.median <= 0:
            return None
        return self.macs_per_pixel * self.out_pixels / (self.median * 1e-3) / 1e9


def parse_size(text: str) -> tuple[str, tuple[int, int]]:
    """``"720p"`` or ``"1366x768"`` → ``(label, (width, height))``.

    Raises:
        UsageError: neither form.
    """
    text = text.strip().lower()
    if text in SIZES:
        return text, SIZES[text]
    w, sep, h = text.partition("x")
    if sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
        return text, (int(w), int(h))
    raise UsageError(f"unknown size {text!r}; use {', '.join(SIZES)} or WIDTHxHEIGHT")


def _size_label(label: str, w: int, h: int, scale: int) -> str:
    named = f"{label} ({w}x{h})" if label in SIZES else label
    return named if scale == 1 else f"{named} → {w * scale}x{h * scale}"


def bench_variants(
    engines: Sequence[Engine],
    sizes: Sequence[tuple[str, tuple[int, int]]],
    repeat: int,
    warmup: int,
    *,
    block: int = 3,
) -> list[Row]:
    """Time ``Engine.process`` of every engine at each size, interleaved: per size, each
    engine runs ``warmup`` untimed calls, then the engines take turns running blocks of
    ``block`` timed calls (after one untimed call, so a thread pool still winding down from
    the previous engine does not tax the next) until each has ``repeat``."""
    rows = []
    for label, (w, h) in sizes:
        frame = synthetic_frame(w, h)
        times: dict[int, list[float]] = {i: [] for i in range(len(engines))}
        macs = [_macs(e) for e in engines]
        for e in engines:
            for _ in range(warmup):
                e.process(frame)
        while any(len(t) < repeat for t in times.values()):
            for i, e in enumerate(engines):
                if len(times[i]) >= repeat:
                    continue
                e.process(frame)
                for _ in range(min(block, repeat - len(times[i]))):
                    t0 = time.perf_counter()
                    e.process(frame)
                    times[i].append((time.perf_counter() - t0) * 1e3)
        for i, e in enumerate(engines):
            rows.append(
                Row(
                    f"{e.info.tier} int8" if e.info.int8 else e.info.tier,
                    e.info.mode,
                    e.describe(),
                    _size_label(label, w, h, e.scale),
                    float(np.median(times[i])),
                    float(np.percentile(times[i], 95)),
                    macs[i][0],
                    w * h * e.scale**2,
                    macs[i][1],
                )
            )
    return rows


def _macs(engine: Engine) -> tuple[float | None, bool]:
    """Multiply-adds per output pixel: the metadata's, else counted from the graph."""
    if engine.info.macs_per_pixel is not None:
        return engine.info.macs_per_pixel, False
    counted = count_macs_per_pixel(engine.model_path)
    return counted, counted is not None


def format_table(rows: Sequence[Row], peak: Peak | None) -> str:
    """The rows as a Markdown table (``% of peak`` against the estimated fp32 peak)."""
    lines = [
        "| tier | mode | backend | frame | median ms | p95 ms | fps | MAC/px | GMAC/s "
        "| % of peak |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        g = r.gmacs
        macs = f"{r.macs_per_pixel:,.0f}" if r.macs_per_pixel is not None else "–"
        macs += "*" if r.macs_counted else ""
        # three significant digits below 10: a tiny test model would otherwise print 0.0
        gm = "–" if g is None else f"{g:.1f}" if g >= 10 else f"{g:.3g}"
        share = f"{g / peak.gmacs:.0%}" if g is not None and peak is not None else "–"
        lines.append(
            f"| {r.tier} | {r.mode} | {r.backend} | {r.size} | {r.median:.1f} | {r.p95:.1f} | "
            f"{r.fps:.1f} | {macs} | {gm} | {share} |"
        )
    return "\n".join(lines)


# -- the uint8 in-graph alternative -----------------------------------------------------------


def compare_io(
    engine: Engine, sizes: Sequence[tuple[str, tuple[int, int]]], repeat: int, warmup: int
) -> list[tuple[str, float, float]]:
    """``(size, host ms, in-graph ms)`` medians per size of ``Engine.process`` on
    ``engine``'s model and provider, once converting on the host with OpenCV
    (``io="host"``) and once inside the :func:`~sharpcam.uint8_io.uint8_wrapper` graph
    (``io="graph"``). The two are timed in alternating blocks, so a busy machine slows
    both alike."""
    engines = {
        io: Engine(engine.model_path, provider=engine.provider, io=io) for io in ("host", "graph")
    }
    results = []
    try:
        for label, (w, h) in sizes:
            frame = synthetic_frame(w, h)
            times: dict[str, list[float]] = {io: [] for io in engines}
            for _ in range(warmup):
                for e in engines.values():
                    e.process(frame)
            # Blocks of calls, alternating, the first of each block untimed: each session's
            # thread pool may still be busy after a run, which would tax the other's call.
            block = 5
            while len(times["host"]) < repeat:
                for io, e in engines.items():
                    e.process(frame)
                    for _ in range(block):
                        t0 = time.perf_counter()
                        e.process(frame)
                        times[io].append((time.perf_counter() - t0) * 1e3)
            results.append(
                (label, float(np.median(times["host"])), float(np.median(times["graph"])))
            )
    finally:
        for e in engines.values():
            e.close()
    return results


# -- end to end on a clip ---------------------------------------------------------------------


def bench_clip(engine: Engine, clip: Path) -> str:
    """Run ``clip`` → model → H.264 file (in a temporary folder) and summarise."""
    from sharpcam.pipeline import RunSettings, run_file
    from sharpcam.sinks import FileSink
    from sharpcam.sources import FileSource

    with tempfile.TemporaryDirectory() as tmp, FileSource(clip) as source:
        info = source.info
        with FileSink.for_source(Path(tmp) / "bench.mp4", info) as sink:
            stats = run_file(source, engine, [sink], RunSettings(progress=False))
    fps = stats.frames_out / stats.elapsed
    return (
        f"{clip.name} ({info.width}x{info.height}) -> H.264 on {engine.provider}: "
        f"{stats.frames_out} frames in {stats.elapsed:.2f} s = {fps:.1f} fps end to end; "
        f"model {np.median(stats.model_ms):.1f} ms median; "
        f"{stats.outside_model_share():.0%} of the time outside the model"
    )


# -- command ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "sharpcam bench",
        "Time each model tier per backend and frame size; prints a Markdown table.",
    )
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", type=Path, default=None, metavar="PATH",
        help="time only this ONNX model (default: every tier of every mode in models/)",
    )  # fmt: skip
    group.add_argument(
        "--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)"
    )
    group = parser.add_argument_group("benchmark")
    group.add_argument(
        "--backends", default="available", metavar="LIST",
        help="comma-separated (onnxruntime,openvino) or 'available'",
    )  # fmt: skip
    group.add_argument(
        "--providers", default="available", metavar="LIST",
        help="ONNX Runtime providers, comma-separated (tensorrt,cuda,cpu) or 'available'",
    )  # fmt: skip
    group.add_argument(
        "--sizes", default="360p,720p,1080p", metavar="LIST",
        help="×1 models: comma-separated 360p, 720p, 1080p or WIDTHxHEIGHT",
    )  # fmt: skip
    group.add_argument(
        "--x2-sizes", default="360p", metavar="LIST", help="×2 models: input sizes (360p → 720p)"
    )
    group.add_argument("--repeat", type=int, default=30, metavar="N", help="timed runs per size")
    group.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed runs first")
    group.add_argument(
        "--io-compare", action="store_true", help="also time conversion inside the graph (uint8)"
    )
    group.add_argument(
        "--clip", type=Path, default=None, metavar="FILE", help="also time FILE -> model -> H.264"
    )
    add_log_options(parser)
    return parser


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    if text == "available":
        return list(known)
    names = [p.strip() for p in text.split(",") if p.strip()]
    if unknown := [p for p in names if p not in known]:
        raise UsageError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)}")
    return names


def _models(model: Path | None) -> list[ModelInfo]:
    if model is not None:
        Engine(model, provider="cpu").close()  # the engine's checks and messages
        return [read_info(model)]
    found = []
    for mode in MODE_SCALES:
        for info in find_models(mode=mode).values():
            found.append(info)
            if (twin := int8_twin(info)) is not None:  # timed beside it, as --tier auto does
                found.append(twin)
    if not found:
        Engine(None, provider="cpu").close()  # says how to make the default model
    return found or [read_info(default_model_path())]


def _open_variants(
    models: Sequence[ModelInfo],
    backends: Sequence[str],
    providers: Sequence[str],
    threads: int | None,
) -> list[Engine]:
    engines: list[Engine] = []
    for info in models:
        for backend in backends:
            for provider in providers if backend == "onnxruntime" else ["cpu"]:
                try:
                    engines.append(
                        Engine(info.path, backend=backend, provider=provider, threads=threads)
                    )
                except ProviderError as err:
                    print(f"{info.path.name} on {backend} {provider}: skipped ({err.reason})")
    return engines


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Print the benchmark table; 0 if at least one variant ran."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.repeat < 1 or args.warmup < 0:
        raise UsageError("--repeat must be at least 1 and --warmup at least 0")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    x2_sizes = [parse_size(s) for s in args.x2_sizes.split(",") if s.strip()]
    providers = _names(args.providers, list(PROVIDERS), "provider")
    installed = [b for b in BACKENDS if b != "openvino" or ov_backend.available()]
    backends = _names(
        args.backends, installed if args.backends == "available" else BACKENDS, "backend"
    )
    engines = _open_variants(_models(args.model), backends, providers, args.threads)
    if not engines:
        raise ProviderError("no backend could run the model here")
    rows: list[Row] = []
    for scale, scale_sizes in ((1, sizes), (2, x2_sizes)):
        group = [e for e in engines if e.scale == scale]
        if group:
            rows += bench_variants(group, scale_sizes, args.repeat, args.warmup)
    peak = estimate_peak()
    models = ", ".join(dict.fromkeys(str(e.model_path) for e in engines))
    print(f"models {models} · {cpu_count()} CPU threads · {args.repeat} runs per variant and size")
    print("whole call per frame (uint8 in and out, conversion included); variants interleaved")
    print(format_table(rows, peak))
    if any(r.macs_counted for r in rows):
        print("MAC/px*: counted from the graph (the model has no sharpcam.macs_per_pixel)")
    print(f"% of peak: against the {peak.describe()}" if peak else "% of peak: clock unknown")
    ort_engines = [e for e in engines if e.backend == "onnxruntime"]
    if args.io_compare:
        print("\nconversion on the host (OpenCV) vs in the graph (uint8 NHWC wrapper):")
        for engine in ort_engines:
            for label, host, graph in compare_io(engine, sizes, args.repeat, args.warmup):
                print(
                    f"{engine.provider} {label}: host {host:.1f} ms, graph {graph:.1f} ms "
                    f"per frame (graph/host {graph / host:.2f})"
                )
    if args.clip is not None:
        print(bench_clip(engines[-1], args.clip))
    return 0
