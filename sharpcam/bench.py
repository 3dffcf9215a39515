"""``sharpcam bench``: how fast the model runs, per provider and frame size.

For every provider that opens here and every size (360p, 720p, 1080p by default) it times
``Engine.process`` on a synthetic frame and prints a Markdown table: model ms per frame
(median and p95), frames per second of the whole call, and the host-side overhead
(conversion to and from the model's layout, padding, copies) with its share.

``--io-compare`` times both places the colour and dtype conversion can happen: on the host
with OpenCV, and inside the ONNX graph (a uint8 NHWC wrapper around the model), so the
engine's choice (``io="auto"``) can be re-checked on any machine.

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

from sharpcam.cli import (
    add_log_options,
    add_model_options,
    make_parser,
    reports_errors,
    setup_logging,
)
from sharpcam.engine import PROVIDERS, Engine, cpu_count
from sharpcam.errors import ProviderError, UsageError

log = logging.getLogger(__name__)

#: Named frame sizes, ``(width, height)``.
SIZES: dict[str, tuple[int, int]] = {
    "360p": (640, 360),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}


@dataclass(frozen=True)
class Row:
    """One provider at one size (times in ms)."""

    provider: str
    size: str
    model_median: float
    model_p95: float
    total_median: float
    host_median: float

    @property
    def fps(self) -> float:
        return 1e3 / self.total_median if self.total_median > 0 else float("inf")

    @property
    def host_share(self) -> float:
        return self.host_median / self.total_median if self.total_median > 0 else 0.0


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


def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An ``HxWx3 uint8`` RGB test picture: smooth gradients, edges and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / max(width, 1) * 6.0)
    g = 128 + 100 * np.cos(y / max(height, 1) * 5.0)
    b = np.where((x // 32 + y // 32) % 2 == 0, 200.0, 60.0)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def bench_engine(
    engine: Engine, sizes: Sequence[tuple[str, tuple[int, int]]], repeat: int, warmup: int
) -> list[Row]:
    """Time ``engine.process`` at each size; one :class:`Row` per size."""
    rows = []
    for label, (w, h) in sizes:
        frame = synthetic_frame(w, h)
        totals, model, host = [], [], []
        for i in range(warmup + repeat):
            t0 = time.perf_counter()
            engine.process(frame)
            if i >= warmup:
                totals.append((time.perf_counter() - t0) * 1e3)
                model.append(engine.last_ms)
                host.append(engine.last_host_ms)
        rows.append(
            Row(
                engine.provider,
                f"{label} ({w}x{h})" if label in SIZES else label,
                float(np.median(model)),
                float(np.percentile(model, 95)),
                float(np.median(totals)),
                float(np.median(host)),
            )
        )
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| provider | frame | model ms (median) | model ms (p95) | total ms | fps "
        "| host ms (share) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.provider} | {r.size} | {r.model_median:.1f} | {r.model_p95:.1f} | "
            f"{r.total_median:.1f} | {r.fps:.1f} | {r.host_median:.1f} ({r.host_share:.0%}) |"
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
        "Time the model per provider and frame size; prints a Markdown table.",
    )
    add_model_options(parser, provider=False)
    group = parser.add_argument_group("benchmark")
    group.add_argument(
        "--providers", default="available", metavar="LIST",
        help="comma-separated (tensorrt,cuda,cpu) or 'available'",
    )  # fmt: skip
    group.add_argument(
        "--sizes", default="360p,720p,1080p", metavar="LIST",
        help="comma-separated: 360p, 720p, 1080p or WIDTHxHEIGHT",
    )  # fmt: skip
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


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Print the benchmark table; 0 if at least one provider ran."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.repeat < 1 or args.warmup < 0:
        raise UsageError("--repeat must be at least 1 and --warmup at least 0")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if args.providers == "available":
        names = list(PROVIDERS)
    else:
        names = [p.strip() for p in args.providers.split(",") if p.strip()]
        if unknown := [p for p in names if p not in PROVIDERS]:
            raise UsageError(f"unknown provider {unknown[0]!r}; choose from {', '.join(PROVIDERS)}")
    rows: list[Row] = []
    engines: list[Engine] = []
    for name in names:
        try:
            engine = Engine(args.model, provider=name, threads=args.threads)
        except ProviderError as err:
            print(f"{name}: skipped ({err.reason})")
            continue
        engines.append(engine)
        rows += bench_engine(engine, sizes, args.repeat, args.warmup)
    if not engines:
        raise ProviderError("no provider could run the model here")
    print(
        f"model {engines[0].model_path} · {cpu_count()} CPU threads · {args.repeat} runs per size"
    )
    print(format_table(rows))
    if args.io_compare:
        print("\nconversion on the host (OpenCV) vs in the graph (uint8 NHWC wrapper):")
        for engine in engines:
            for label, host, graph in compare_io(engine, sizes, args.repeat, args.warmup):
                print(
                    f"{engine.provider} {label}: host {host:.1f} ms, graph {graph:.1f} ms "
                    f"per frame (graph/host {graph / host:.2f})"
                )
    if args.clip is not None:
        print(bench_clip(engines[-1], args.clip))
    return 0
