"""Quality against speed: sharpcam's models and their peers on one plot.

``python -m training.quality_speed --report DIR/report.json --models models/*.onnx
--out models/quality_speed.png``. Quality: each method's mean PSNR gain over the degraded
input on the evaluation clips of :mod:`training.evaluate_video`'s ``report.json``, for one
degradation (``call-h264-low``: the ×2 operating point); a sharpcam model's stabilized row
wins over its plain one (the runtime stabilizes). Speed: each method with a row, timed here,
calls interleaved over ``--rounds`` rounds, median and p95 of the whole call (uint8 in, out):
×2 methods 640×360 → 1280×720, restore methods on 1280×720. Sharpcam models run through
:class:`sharpcam.engine.Engine` on each backend the runtime would consider; the plot shows
the fastest. Writes the PNG, a JSON of its points beside it, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from time import perf_counter

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter
from matplotlib.transforms import Bbox
from tqdm import tqdm

from sharpcam.atomic import atomic_path, atomic_write_text
from sharpcam.engine import Engine
from sharpcam.errors import ModelError, ProviderError
from sharpcam.machine import cpu_count
from sharpcam.models import read_info
from sharpcam.runtime import EngineSettings, backend_names
from sharpcam.temporal import Stabilizer
from training.degradations import CLIP_DEGRADATIONS
from training.evaluate_video import IDENTITY, UNSHARP, bicubic_x2
from training.peers import DEFAULT_PEERS, load_peers

FPS30_MS = 1000.0 / 30.0
KINDS = {"x2": ("tab:blue", "×2: 640×360 → 1280×720"), "restore": ("tab:orange", "restore: 720p")}
ROW = "{:44} {:8} {:>12} {:>10} {:>8}  {}"
Frames = Callable[[np.ndarray], np.ndarray]


class QualitySpeedError(ValueError):
    """Bad input; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Point:
    """One method on the plot: its quality, and its fastest backend's time."""

    method: str
    kind: str
    psnr_gain: float | None
    quality_row: str | None
    ms_median: float
    ms_p95: float
    backend: str = ""
    backends: dict[str, tuple[float, float]] = field(default_factory=dict)


def mean_gains(report: dict, degradation: str) -> tuple[dict[str, float], int, str]:
    """Mean PSNR gain by method on the evaluation clips (or all), clip count, a caption."""
    results = [r for r in report.get("results", []) if r.get("degradation") == degradation]
    if not results:
        have = sorted({str(r.get("degradation")) for r in report.get("results", [])})
        raise QualitySpeedError(
            f"the report has no {degradation} results (has: {', '.join(have) or 'none'}); "
            "pass --degradation with one of those or rerun training.evaluate_video"
        )
    chosen = [r for r in results if r.get("role") == "evaluation"]
    which = "evaluation clips" if chosen else "clips (none is an evaluation clip)"
    chosen = chosen or results
    gains: dict[str, list[float]] = {}
    for row in (x for r in chosen for x in r["rows"]):
        gains.setdefault(row["method"], []).append(float(row["psnr_gain"]))
    if base := [x for r in chosen for x in r["rows"] if x["method"] == IDENTITY]:
        psnr, ssim = (np.mean([x[k] for x in base]) for k in ("psnr", "ssim"))
        which += f" (degraded input {psnr:.2f} dB, SSIM {ssim:.4f})"
    return {m: float(np.mean(g)) for m, g in gains.items()}, len(chosen), which


def report_row(gains: dict[str, float], prefix: str) -> str | None:
    """The report's row that starts with ``prefix``: a stabilized one when there is one."""
    rows = [m for m in gains if m.startswith(prefix)]
    return next((m for m in rows if "stabiliz" in m), rows[0] if rows else None)


@dataclass(frozen=True)
class Candidate:
    """One thing to time: ``fn`` on ``frame``."""

    method: str
    kind: str
    backend: str
    fn: Frames
    row: str | None


def time_interleaved(
    candidates: Sequence[Candidate], frames: dict[str, np.ndarray], rounds: int
) -> list[list[float]]:
    """Milliseconds of each call: ``rounds`` interleaved rounds after a warm-up round."""
    times: list[list[float]] = [[] for _ in candidates]
    for _ in tqdm(range(rounds + 1), desc="timing rounds", unit="round"):
        for c, ms in zip(candidates, times, strict=True):
            t0 = perf_counter()
            c.fn(frames[c.kind])
            ms.append((perf_counter() - t0) * 1e3)
    return [ms[1:] for ms in times]


def stabilized(stabilizer: Stabilizer, process: Frames, frame: np.ndarray) -> np.ndarray:
    """``process`` then the temporal ``stabilizer``, as the runtime runs a model."""
    return stabilizer(frame, process(frame))


def timing_frames() -> dict[str, np.ndarray]:
    """A smooth, textured 640×360 frame (×2 input) and its bicubic 1280×720 (restore)."""
    noise = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    small = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return {"x2": small, "restore": bicubic_x2(small)}


#: Label positions tried in turn (points from the marker) until one overlaps no other label.
LABEL_OFFSETS = ((7, 5), (7, -13), (7, 15), (7, -23), (7, 25), (7, -33), (-7, 5), (-7, -13))


def place_labels(ax: Axes, points: Sequence[Point]) -> None:
    """One label per point, nudged (:data:`LABEL_OFFSETS`) so that it covers no other label
    and no marker."""
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    centres = ax.transData.transform([(p.ms_median, p.psnr_gain) for p in points])
    taken = [Bbox.from_extents(x - 8, y - 8, x + 8, y + 8) for x, y in centres]  # the markers
    for p in points:
        ours = p.method.startswith("sharpcam")
        name = p.method.removeprefix("sharpcam ") if ours else p.method
        label = f"{name}, {p.backend}" if ours else name
        style = {"fontsize": 8, "weight": "bold" if ours else None}
        for dx, dy in LABEL_OFFSETS:
            text = ax.annotate(
                label,
                (p.ms_median, p.psnr_gain),
                (dx, dy),
                textcoords="offset points",
                ha="left" if dx > 0 else "right",
                **style,
            )
            box = text.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(other) for other in taken):
                break
            if (dx, dy) != LABEL_OFFSETS[-1]:
                text.remove()
        taken.append(box)


def figure(points: Sequence[Point], title: str) -> Figure:
    """x: ms per 720p output frame (log), y: PSNR gain; one labelled marker per method."""
    fig, ax = plt.subplots(figsize=(10, 5.8), constrained_layout=True)
    shown = [p for p in points if p.psnr_gain is not None]
    for colour, what in KINDS.values():
        ax.scatter([], [], color=colour, label=what)
    for marker, what in (("o", "sharpcam (fastest backend)"), ("s", "peers and baselines")):
        ax.scatter([], [], marker=marker, color="white", edgecolor="black", label=what)
    for p in shown:
        ours = p.method.startswith("sharpcam")
        dot = {"s": 90 if ours else 55, "marker": "o" if ours else "s", "edgecolor": "black"}
        ax.scatter(p.ms_median, p.psnr_gain, color=KINDS[p.kind][0], zorder=3, **dot)
    ax.axvline(FPS30_MS, ls="--", lw=1.2, color="black", label="30 fps: 33.3 ms per frame")
    ax.margins(y=0.12)
    ax.axhline(0.0, ls=":", lw=1, color="grey", label="degraded input (0 dB)")
    ax.set_xscale("log")
    xs = [p.ms_median for p in shown] + [FPS30_MS]
    ax.set_xlim(min(xs) / 1.6, max(xs) * 6)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ms per 1280×720 output frame (median; log scale; left is faster)")
    ax.set_ylabel("mean PSNR gain over the degraded input (dB)")
    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    fig.canvas.draw()  # fixes the limits, so the labels can be measured where they land
    place_labels(ax, shown)
    return fig


def table(points: Sequence[Point]) -> str:
    lines = [ROW.format("method", "kind", "PSNR gain dB", "ms median", "ms p95", "backend")]
    for p in points:
        gain = "n/a" if p.psnr_gain is None else f"{p.psnr_gain:+.2f}"
        for backend, (med, p95) in p.backends.items():
            mark = " *" if len(p.backends) > 1 and backend == p.backend else ""
            cells = (p.method, p.kind, gain, f"{med:.1f}", f"{p95:.1f}", backend + mark)
            lines.append(ROW.format(*cells))
    return "\n".join([*lines, "(*: the backend on the plot, the fastest one)"])


def sharpcam_candidates(
    paths: Sequence[str], gains: dict[str, float], threads: int | None
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Engines for each model file on each backend the runtime would consider."""
    candidates, skipped = [], []
    for path in map(Path, paths):
        if not path.is_file():
            raise QualitySpeedError(f"model {path} does not exist: pass --models with ONNX files")
        try:
            info = read_info(path)
        except ModelError as exc:
            raise QualitySpeedError(str(exc)) from None
        kind = "x2" if info.scale == 2 else "restore"
        row = report_row(gains, f"sharpcam {path.name} (x{info.scale})")
        stable = row is not None and "stabiliz" in row  # the runtime stabilizes by default
        method = f"sharpcam {path.stem} ({info.tier})" + (" + stabilizer" if stable else "")
        names = backend_names(EngineSettings(upscale=info.scale))
        if info.int8 and "openvino" in names:
            names = ["openvino"]  # the runtime runs int8 files on OpenVINO only
        for name in names:
            try:
                engine = Engine(path, backend=name, threads=threads, upscale=info.scale)
            except (ModelError, ProviderError) as exc:
                skipped.append((f"{method} on {name}", str(exc).splitlines()[0]))
                continue
            fn = partial(stabilized, Stabilizer(), engine.process) if stable else engine.process
            candidates.append(Candidate(method, kind, engine.describe(), fn, row))
    return candidates, skipped


def points_of(
    candidates: Sequence[Candidate], times: Sequence[list[float]], gains: dict[str, float]
) -> list[Point]:
    """One point per method, at its fastest backend."""
    by_method: dict[str, list[tuple[Candidate, float, float]]] = {}
    for c, ms in zip(candidates, times, strict=True):
        stats = (c, float(np.median(ms)), float(np.percentile(ms, 95)))
        by_method.setdefault(c.method, []).append(stats)
    points = []
    for method, runs in by_method.items():
        best, med, p95 = min(runs, key=lambda r: r[1])
        gain = gains.get(best.row) if best.row else None
        backends = {c.backend: (m, p) for c, m, p in runs}
        points.append(Point(method, best.kind, gain, best.row, med, p95, best.backend, backends))
    return sorted(points, key=lambda p: (p.kind, p.ms_median))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.quality_speed",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--report", required=True, help="report.json of training.evaluate_video")
    parser.add_argument("--models", nargs="*", default=[], help="sharpcam ONNX models to time")
    parser.add_argument("--out", required=True, help="PNG to write (the JSON goes beside it)")
    parser.add_argument("--peers", default=str(DEFAULT_PEERS), help="peer models folder")
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per method")
    parser.add_argument("--degradation", default="call-h264-low", choices=[*CLIP_DEGRADATIONS])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (all cores)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.rounds < 1:
            raise QualitySpeedError(f"--rounds must be at least 1, got {args.rounds}")
        try:
            report = json.loads(Path(args.report).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            why = f"cannot read report {args.report}: {exc}; pass training.evaluate_video's"
            raise QualitySpeedError(f"{why} report.json") from None
        gains, clips, which = mean_gains(report, args.degradation)
        ours, skipped = sharpcam_candidates(args.models, gains, args.threads)
    except QualitySpeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cores = cpu_count()
    threads = args.threads or cores
    cv2.setNumThreads(threads)
    peers, skipped_peers = load_peers(Path(args.peers), threads)
    row = partial(report_row, gains)
    dnn = {p.name: "ncnn" if "ncnn" in p.name else "OpenCV dnn" for p in peers}
    candidates = [
        Candidate("bicubic x2", "x2", "OpenCV", bicubic_x2, row("bicubic x2")),
        *(Candidate(p.name, "x2", dnn[p.name], p.fn, row(p.name)) for p in peers),
        Candidate("unsharp mask", "restore", "OpenCV", UNSHARP, row("unsharp mask")),
        *ours,
    ]
    skipped += skipped_peers
    skipped += [(c.method, "no row in the report: not timed") for c in candidates if not c.row]
    candidates = [c for c in candidates if c.row]
    points = points_of(
        candidates, time_interleaved(candidates, timing_frames(), args.rounds), gains
    )
    title = f"PSNR gain on {args.degradation}, mean over {clips} {which}\nvs time per 720p"
    title += f" frame on this {cores}-core CPU, median of {args.rounds} interleaved calls"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(points, title)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    payload = {
        "degradation": args.degradation, "clips": clips, "clip_set": which,
        "rounds": args.rounds, "cpu_cores": cores, "threads": threads,
        "points": [asdict(p) for p in points],
        "skipped": [list(s) for s in skipped],
    }  # fmt: skip
    atomic_write_text(out.with_suffix(".json"), json.dumps(payload, indent=1) + "\n")
    print(title.replace("\n", " "))
    print(table(points))
    print(*(f"skipped {name}: {why}" for name, why in skipped), sep="\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
