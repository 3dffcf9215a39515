"""The call-video benchmark: what sharpcam and its peers do to degraded talking-head clips.

``python -m training.evaluate_video --clips DIR --models models/sharpcam.onnx --out DIR``
degrades every clip of ``DIR`` with each named clip degradation
(:data:`training.degradations.CLIP_DEGRADATIONS`: ``seed``, ``call-h264-low``,
``call-vp8-low``, ``blocking``) and scores, against the pristine frames:

* the degraded input itself (identity: absolute PSNR/SSIM; every other row is a gain over
  it). For the x1/2 degradations the degraded input *is* the decoded half-size frame
  upscaled bicubically, so the ``bicubic x2`` row equals it and is kept to show that;
* an unsharp mask (sigma 1, amount 0.5: fixed, not tuned on these clips);
* the x2 peers of :mod:`training.peers` (FSRCNN, ESPCN, SPAN), on the half-size frames;
* every sharpcam model given: ``sharpcam.scale`` 2 models get the half-size frames,
  scale 1 models the full-size degraded ones. ``--stabilize`` (default ``both``) says whether
  each model's row is the bare model (``no``), its outputs run through the runtime's
  :class:`sharpcam.temporal.Stabilizer` (``yes``: a row named ``... + stabilizer``, what
  ``sharpcam`` shows), or both.

Columns: PSNR and SSIM (mean over frames, RGB) and their gains over the identity; flicker
(:func:`training.metrics.flicker`) as a ratio to the identity's own; VMAF when a ``vmaf``
tool is on the PATH (model ``vmaf_v0.6.1``; VMAF rewards plain sharpening, so read it
beside PSNR/SSIM only). Writes ``report.md``, ``report.json`` and ``faces/CLIP.png`` (a face
crop per degradation: degraded | first sharpcam model | pristine) under ``--out``.

Clips named in :data:`training.sequences.EVALUATION_CLIPS` are never used in training; the
report marks each clip's role.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from sharpcam.atomic import atomic_path, atomic_write_text
from sharpcam.temporal import Stabilizer
from training.baselines import UnsharpMask
from training.degradations import CLIP_DEGRADATIONS, CLIP_DESCRIPTIONS, DegradedClip
from training.metrics import fast_scores, flicker
from training.peers import DEFAULT_PEERS, load_peers
from training.sequences import clip_role, read_clip

log = logging.getLogger("training.evaluate_video")

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".y4m", ".mpg"})
UNSHARP = UnsharpMask(sigma=1.0, amount=0.5)
VMAF_MODEL = "vmaf_v0.6.1"
VMAF_ARGS = ("--model", f"version={VMAF_MODEL}")
IDENTITY = "degraded input (identity)"


class BenchError(ValueError):
    """Bad benchmark input; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Method:
    """A row of the table: ``fn`` maps one input frame to one full-size output frame.

    ``scale`` 1 methods get the full-size degraded frames, ``scale`` 2 ones the decoded
    half-size frames (and are skipped on degradations that keep the full size).
    ``stabilized``: this row is the outputs of the method of that name run through a fresh
    :class:`~sharpcam.temporal.Stabilizer` (``fn`` is then not called: the model runs once).
    """

    name: str
    scale: int
    fn: Callable[[np.ndarray], np.ndarray]
    stabilized: str | None = None


class OnnxModel:
    """A sharpcam ONNX model run with ONNX Runtime (CPU): ``frames`` in, ``sharpened`` out.

    Frames are reflect-padded to a multiple of 8 and cropped back; ``sharpcam.scale``
    (metadata, default 1) says whether the output is twice the input's size.
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BenchError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.scale = int(meta.get("sharpcam.scale", "1"))
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        padded = cv2.copyMakeBorder(frame, 0, -h % 8, 0, -w % 8, cv2.BORDER_REFLECT_101)
        x = padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        y = self.session.run([self.output], {self.input: x})[0][0]
        y = y[:, : h * self.scale, : w * self.scale].transpose(1, 2, 0)
        return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def bicubic_x2(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.resize(frame, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)


@dataclass(frozen=True)
class Row:
    """Scores of one method on one degraded clip (means over frames)."""

    method: str
    scale: int
    psnr: float
    ssim: float
    psnr_gain: float
    ssim_gain: float
    flicker: float
    flicker_ratio: float
    vmaf: float | None = None


@dataclass(frozen=True)
class ClipResult:
    """One clip under one degradation."""

    clip: str
    role: str
    degradation: str
    frames: int
    size: str
    params: dict[str, object]
    rows: list[Row]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def vmaf_tool() -> str | None:
    """The ``vmaf`` command line tool, when installed."""
    return shutil.which("vmaf")


def write_y4m(path: Path, frames: Sequence[np.ndarray]) -> None:
    """Write RGB frames as an 8-bit 4:2:0 Y4M file (for the ``vmaf`` tool)."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            fh.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())


def vmaf_score(tool: str, frames: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """Mean VMAF (model :data:`VMAF_MODEL`) of ``frames`` against ``truth``."""
    with tempfile.TemporaryDirectory() as tmp:
        ref, dist, out = Path(tmp) / "ref.y4m", Path(tmp) / "dist.y4m", Path(tmp) / "v.json"
        write_y4m(ref, truth)
        write_y4m(dist, frames)
        subprocess.run(
            [tool, "-r", str(ref), "-d", str(dist), "--json", "-o", str(out), *VMAF_ARGS],
            check=True,
            capture_output=True,
        )
        return float(json.loads(out.read_text())["pooled_metrics"]["vmaf"]["mean"])


def scores(frames: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM over frames."""
    pairs = [fast_scores(f, g) for f, g in zip(frames, truth, strict=True)]
    return float(np.mean([p for p, _ in pairs])), float(np.mean([s for _, s in pairs]))


def evaluate_clip(
    name: str,
    pristine: list[np.ndarray],
    degradation: str,
    methods: Sequence[Method],
    *,
    vmaf: str | None = None,
) -> tuple[ClipResult, dict[str, list[np.ndarray]]]:
    """Score ``methods`` on ``pristine`` degraded by ``degradation``; also the outputs."""
    clip: DegradedClip = CLIP_DEGRADATIONS[degradation](pristine)
    outputs: dict[str, list[np.ndarray]] = {IDENTITY: clip.full}
    skipped: list[tuple[str, str]] = []
    candidates = [Method("unsharp mask (sigma 1, amount 0.5)", 1, UNSHARP)]
    if clip.lr is not None:
        candidates.append(Method("bicubic x2 (of the decoded half-size frames)", 2, bicubic_x2))
    for method in [*candidates, *methods]:
        if method.scale == 2 and clip.lr is None:
            skipped.append((method.name, f"x2 method: {degradation} keeps the full size"))
            continue
        inputs = clip.model_input(method.scale)
        if method.stabilized is None:
            outputs[method.name] = [method.fn(f) for f in inputs]
            continue
        bare = outputs.get(method.stabilized)
        if bare is None:
            bare = [method.fn(f) for f in inputs]
        stabilizer = Stabilizer()
        outputs[method.name] = [stabilizer(f, o) for f, o in zip(inputs, bare, strict=True)]
    base_psnr, base_ssim = scores(clip.full, pristine)
    base_flicker = flicker(clip.full, pristine)
    rows = []
    for method, frames in outputs.items():
        p, s = (base_psnr, base_ssim) if method == IDENTITY else scores(frames, pristine)
        fl = flicker(frames, pristine)
        scale = next((m.scale for m in [*candidates, *methods] if m.name == method), 1)
        rows.append(
            Row(
                method,
                scale,
                p,
                s,
                p - base_psnr,
                s - base_ssim,
                fl,
                fl / base_flicker if base_flicker > 0 else float("nan"),
                vmaf_score(vmaf, frames, pristine) if vmaf else None,
            )
        )
    h, w = pristine[0].shape[:2]
    result = ClipResult(
        name, clip_role(name), degradation, len(pristine), f"{w}x{h}", clip.params, rows, skipped
    )
    return result, outputs


def face_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """``(y, x, h, w)`` around the largest face, else a centred square of half the height.

    OpenCV's bundled Haar cascade finds the face where this OpenCV has it (opencv-python 5
    no longer ships ``CascadeClassifier``); a talking head sits near the centre.
    """
    h, w = frame.shape[:2]
    faces = []
    if hasattr(cv2, "CascadeClassifier") and hasattr(cv2, "data"):
        cascade = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        )
        if not cascade.empty():
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            faces = list(cascade.detectMultiScale(grey, 1.1, 5, minSize=(24, 24)))
    if faces:
        x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
        side = int(max(fw, fh) * 1.4)
        cx, cy = x + fw // 2, y + fh // 2
    else:
        side, cx, cy = min(h, w) // 2, w // 2, h // 2
    side = min(side, h, w)
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    return y0, x0, side, side


def face_sheet(
    pristine: list[np.ndarray], panels: list[tuple[str, np.ndarray, np.ndarray | None]]
) -> np.ndarray:
    """One row per degradation: degraded | sharpcam | pristine crops of the middle frame."""
    t = len(pristine) // 2
    y, x, h, w = face_box(pristine[t])
    zoom = max(1, 160 // h)

    def crop(frame: np.ndarray | None) -> np.ndarray:
        if frame is None:
            return np.full((h * zoom, w * zoom, 3), 128, np.uint8)
        part = frame[y : y + h, x : x + w]
        return cv2.resize(part, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)

    rows = []
    for title, degraded, sharpened in panels:
        row = np.concatenate([crop(degraded), crop(sharpened), crop(pristine[t])], axis=1)
        bar = np.full((18, row.shape[1], 3), 255, np.uint8)
        text = f"{title}: degraded | sharpcam | pristine"
        cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        rows.append(np.concatenate([bar, row], axis=0))
    return np.concatenate(rows, axis=0)


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def short(clip: str) -> str:
    """A clip's column title: the first two parts of its name (``grid_lwbsza``)."""
    return "_".join(clip.split("_")[:2])


def markdown(results: Sequence[ClipResult], notes: Sequence[str]) -> str:
    """Per degradation: a summary over clips, then one table per clip."""
    lines = ["# Call-video benchmark", ""] + [f"- {n}" for n in notes] + [""]
    for degradation in dict.fromkeys(r.degradation for r in results):
        group = [r for r in results if r.degradation == degradation]
        lines += [f"## {degradation}: {CLIP_DESCRIPTIONS[degradation]}", ""]
        clips = [r.clip for r in group]
        lines += [
            "| method | mean PSNR gain dB | mean SSIM gain | worst flicker ratio | "
            + " | ".join(f"{short(c)} dB" for c in clips)
            + " |",
            "|---|---:|---:|---:|" + "---:|" * len(clips),
        ]
        for method in dict.fromkeys(row.method for r in group for row in r.rows):
            rows = {r.clip: next((x for x in r.rows if x.method == method), None) for r in group}
            got = [x for x in rows.values() if x is not None]
            if method == IDENTITY:
                cells = [f"{x.psnr:.2f} / {x.ssim:.4f}" if x else "-" for x in rows.values()]
                lines.append(
                    f"| {method}: PSNR / SSIM | {np.mean([x.psnr for x in got]):.2f} | "
                    f"{np.mean([x.ssim for x in got]):.4f} | 1.00 | " + " | ".join(cells) + " |"
                )
                continue
            cells = [f"{x.psnr_gain:+.2f}" if x else "-" for x in rows.values()]
            lines.append(
                f"| {method} | {np.mean([x.psnr_gain for x in got]):+.2f} | "
                f"{np.mean([x.ssim_gain for x in got]):+.4f} | "
                f"{max(x.flicker_ratio for x in got):.2f} | " + " | ".join(cells) + " |"
            )
        lines.append("")
        for r in group:
            lines += [
                f"### {r.clip} ({r.role} clip, {r.frames} frames, {r.size}), {degradation}",
                "",
                f"Degradation parameters: {json.dumps(r.params)}",
                "",
                "| method | PSNR dB | SSIM | PSNR gain | SSIM gain | flicker | flicker ratio "
                "| VMAF |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for x in r.rows:
                lines.append(
                    f"| {x.method} | {x.psnr:.2f} | {x.ssim:.4f} | {x.psnr_gain:+.2f} | "
                    f"{x.ssim_gain:+.4f} | {x.flicker:.3f} | {x.flicker_ratio:.2f} | "
                    f"{fmt(x.vmaf, '.2f')} |"
                )
            lines += [f"- skipped {name}: {why}" for name, why in r.skipped] + [""]
    return "\n".join(lines) + "\n"


def find_clips(paths: Sequence[str]) -> list[Path]:
    """Video files named, or found in folders named."""
    clips: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            clips += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            clips.append(path)
        else:
            raise BenchError(f"{path} does not exist: pass --clips with video files or a folder")
    if not clips:
        raise BenchError(f"no video file in {', '.join(paths)}: pass --clips with .mp4 clips")
    return clips


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate_video",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clips", nargs="+", required=True, help="clip files or folders")
    parser.add_argument("--models", nargs="*", default=[], help="sharpcam ONNX models")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--degradations",
        nargs="+",
        default=list(CLIP_DEGRADATIONS),
        choices=list(CLIP_DEGRADATIONS),
        help="named clip degradations",
    )
    parser.add_argument(
        "--stabilize",
        nargs="?",
        const="yes",
        default="both",
        choices=("both", "yes", "no"),
        help="sharpcam rows: the bare model (no), through the runtime's temporal stabilizer "
        "(yes; the flag alone), or both",
    )
    parser.add_argument("--peers", default=str(DEFAULT_PEERS), help="peer models folder")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip (all)")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads of OpenCV, ncnn and ONNX Runtime"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        clips = find_clips(args.clips)
        models = []
        for raw in args.models:
            if not Path(raw).is_file():
                raise BenchError(f"model {raw} does not exist: pass --models with ONNX files")
            model = OnnxModel(Path(raw), args.threads)
            name = f"sharpcam {Path(raw).name} (x{model.scale})"
            if args.stabilize in ("both", "no"):
                models.append(Method(name, model.scale, model))
            if args.stabilize in ("both", "yes"):
                stable = f"{name} + stabilizer"
                models.append(Method(stable, model.scale, model, stabilized=name))
        pristines = {c.stem: read_clip(c, args.max_frames) for c in clips}
    except (BenchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cv2.setNumThreads(args.threads)
    peers, skipped_peers = load_peers(Path(args.peers), args.threads)
    tool = vmaf_tool()
    notes = [
        "Gains are over the degraded input (identity row, absolute figures); PSNR/SSIM on "
        "RGB, mean over frames. Flicker ratio: the method's flicker over the degraded input's.",
        "Clip roles: evaluation clips are never used in training (training.sequences).",
        f"VMAF: {VMAF_MODEL} via {tool}" if tool else "VMAF: n/a (no vmaf tool on this machine)",
        *(f"peer skipped: {name}: {why}" for name, why in skipped_peers),
    ]
    methods = [Method(p.name, p.scale, p.fn) for p in peers] + models
    out = Path(args.out)
    (out / "faces").mkdir(parents=True, exist_ok=True)
    results: list[ClipResult] = []
    jobs = [(c, d) for c in pristines for d in args.degradations]
    panels: dict[str, list[tuple[str, np.ndarray, np.ndarray | None]]] = {}
    for name, degradation in tqdm(jobs, desc="clips x degradations", unit="job"):
        result, outputs = evaluate_clip(name, pristines[name], degradation, methods, vmaf=tool)
        results.append(result)
        t = len(pristines[name]) // 2
        first = next((m.name for m in models if m.name in outputs), None)
        panels.setdefault(name, []).append(
            (degradation, outputs[IDENTITY][t], outputs[first][t] if first else None)
        )
    for name, rows in panels.items():
        with atomic_path(out / "faces" / f"{name}.png") as tmp:
            sheet = cv2.cvtColor(face_sheet(pristines[name], rows), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(tmp), sheet)
    report = markdown(results, notes)
    atomic_write_text(out / "report.md", report)
    payload = {"notes": notes, "results": [asdict(r) for r in results]}
    atomic_write_text(out / "report.json", json.dumps(payload, indent=1) + "\n")
    print(report)
    log.info("wrote %s, %s and %d face crops", out / "report.md", out / "report.json", len(panels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
