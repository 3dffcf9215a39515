"""int8 export: quantize a sharpcam ONNX model's convolutions, and keep it only if it holds.

``python -m training.quantize --model X.onnx --data PHOTOS --run RUN --out X.int8.onnx``

1. **Calibration** on degraded crops of the run's TRAINING photos (``RUN/split.json``,
   halves A and B; never a test image): ONNX Runtime static quantization in the QDQ format,
   convolutions only (their inputs and weights: activations uint8, weights int8 per output
   channel, "U8S8"), min-max ranges. Two kinds stay float (:func:`float_convs`): an x2
   model's fixed bicubic upsample and the fast students' zero-sum first layer, whose
   rounding would land on every pixel. ONNX Runtime fuses each DQ -> Conv -> Q into an int8
   convolution; OpenVINO reads the same QDQ graph and runs those convolutions in int8.
2. **Quality check** on the run's full TEST photos, for the seed degradation and, when
   the run trained on ``call`` (``RUN/config.json``), the low-rate H.264 and VP8 calls and
   blocking (the named clip degradations of the call benchmark): mean PSNR of the int8
   model against the fp32 model, both on ONNX Runtime CPU, the degraded input's PSNR
   printed beside them. If int8 loses more than ``--max-loss`` dB (default 0.05) on any
   of them, the command refuses with one line, exits 1 and writes nothing; otherwise the
   file is written atomically with the fp32 model's metadata plus ``sharpcam.precision``
   and ``sharpcam.int8_check``.

x2 models (``sharpcam.scale`` = 2) get the degradation's half-size frame; the input figure
is then what a viewer sees without sharpcam, that frame upscaled with bicubic.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime import quantization as q
from tqdm import tqdm

from sharpcam.atomic import atomic_write_bytes
from sharpcam.contract import INPUT_NAME
from training.data import DataError, Split, read_rgb
from training.degradations import CLIP_DEGRADATIONS

#: Largest PSNR loss (dB) against the fp32 model accepted on the photo test set.
MAX_LOSS_DB = 0.05


class QuantizeError(RuntimeError):
    """The int8 model cannot be made or does not hold; one line naming the problem."""


@dataclass(frozen=True)
class Settings:
    """How to quantize and check."""

    max_loss_db: float = MAX_LOSS_DB
    calibration_crops: int = 48
    crop: int = 256  # side of the (ground-truth) calibration crops, a multiple of 16
    op_types: tuple[str, ...] = ("Conv",)
    per_channel: bool = True
    test_images: int | None = None  # None: the whole test set
    seed: int = 0


@dataclass(frozen=True)
class Check:
    """Mean PSNR (dB) over the test photos for one degradation."""

    degradation: str
    images: int
    input_psnr: float
    fp32_psnr: float
    int8_psnr: float

    @property
    def loss(self) -> float:
        return self.fp32_psnr - self.int8_psnr

    def line(self) -> str:
        return (
            f"{self.degradation}: input {self.input_psnr:.2f} dB, fp32 {self.fp32_psnr:.2f} dB "
            f"({self.fp32_psnr - self.input_psnr:+.2f}), int8 {self.int8_psnr:.2f} dB "
            f"({self.int8_psnr - self.input_psnr:+.2f}); int8 loses {self.loss:+.3f} dB "
            f"on {self.images} test photos"
        )


def model_scale(model: onnx.ModelProto) -> int:
    """``sharpcam.scale`` of a model (1 when absent)."""
    meta = {p.key: p.value for p in model.metadata_props}
    return int(meta.get("sharpcam.scale", "1"))


def degraded_pair(image: np.ndarray, degradation: str, scale: int) -> tuple[np.ndarray, ...]:
    """``(model input, what the viewer had without sharpcam, ground truth)``, ``HxWx3
    uint8``, for one photo or crop (cropped to multiples of 16) and one named clip
    degradation of :data:`training.degradations.CLIP_DEGRADATIONS`."""
    h, w = (image.shape[0] // 16) * 16, (image.shape[1] // 16) * 16
    truth = np.ascontiguousarray(image[:h, :w])
    clip = CLIP_DEGRADATIONS[degradation]([truth])
    return clip.model_input(scale)[0], clip.full[0], truth


def to_input(image: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` -> ``(1, 3, H, W)`` float32 in ``[0, 1]``."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def calibration_inputs(
    data: Path,
    names: Sequence[str],
    degradations: Sequence[str],
    scale: int,
    settings: Settings,
) -> list[np.ndarray]:
    """Degraded random crops of the training photos ``names`` (model inputs)."""
    rng = np.random.default_rng(settings.seed)
    images = [img for img in (read_rgb(data / n) for n in names) if img is not None]
    if not images:
        raise QuantizeError(f"no training photo of the split could be read in {data}")
    inputs = []
    size = settings.crop
    for i in range(settings.calibration_crops):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape[:2]
        side = min(size, (min(h, w) // 16) * 16)
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = np.ascontiguousarray(image[y : y + side, x : x + side])
        name = degradations[i % len(degradations)]
        inputs.append(to_input(degraded_pair(crop, name, scale)[0]))
    return inputs


class _Frames(q.CalibrationDataReader):
    """Feeds calibration inputs to ONNX Runtime's calibrator."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self._it = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}


def fixed_upsample_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions that are an x2 model's fixed bicubic upsample (weights
    named ``...upsample.kernel``): they make the base image itself, so they stay float; in
    int8 their rounding lands on every output pixel (it cost the x2 quality tier its whole
    +0.16 dB on the test photos)."""
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv"
        and len(node.input) > 1
        and node.input[1].endswith("upsample.kernel")
    ]


def zero_sum_convs(model: onnx.ModelProto, tolerance: float = 1e-4) -> list[str]:
    """Names of the convolutions whose every output channel's kernel sums to zero (the
    fast students' first layer, :class:`training.students.ZeroSumConv2d`): they leave flat
    areas alone only while the sum is exactly zero. int8 weights round each kernel off
    zero, and the error lands on every flat area as a small offset: it cost the fast
    restore tier 0.50 of its 0.83 dB on the test photos (seed blur); kept float it lost
    0.03 dB on eight of them."""
    weights = {t.name: t for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        per_channel = w.reshape(w.shape[0], -1)
        sums = np.abs(per_channel.sum(axis=1))
        scale = np.abs(per_channel).sum(axis=1)
        if scale.max() > 0 and np.all(sums <= tolerance * scale):  # all zero: not one
            names.append(node.name)
    return names


def float_convs(model: onnx.ModelProto) -> list[str]:
    """The convolutions int8 export leaves in float: :func:`fixed_upsample_convs` and
    :func:`zero_sum_convs`."""
    return sorted({*fixed_upsample_convs(model), *zero_sum_convs(model)})


def kept_float(model: onnx.ModelProto) -> str:
    """What :func:`float_convs` leaves in float, in words for the model's metadata."""
    parts = [
        f"{len(names)} {what} kept float"
        for names, what in (
            (fixed_upsample_convs(model), "fixed bicubic upsample convolution(s)"),
            (zero_sum_convs(model), "zero-sum first layer(s)"),
        )
        if names
    ]
    return "; ".join(parts) or "every convolution int8"


def quantize(model: Path, inputs: Sequence[np.ndarray], settings: Settings) -> bytes:
    """The QDQ int8 graph of ``model`` (convolutions only, not :func:`float_convs`),
    calibrated on ``inputs``."""
    source = onnx.load(str(model), load_external_data=False)
    with tempfile.TemporaryDirectory(prefix="sharpcam-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        q.quantize_static(
            str(model),
            str(out),
            _Frames(inputs),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(settings.op_types),
            per_channel=settings.per_channel,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
            nodes_to_exclude=float_convs(source),
        )
        proto = onnx.load(str(out))
    del proto.metadata_props[:]
    proto.metadata_props.extend(source.metadata_props)
    return proto.SerializeToString()


def quantize_random(
    model: Path, size: tuple[int, int], folder: Path, op_types: tuple[str, ...] = ("Conv",)
) -> Path:
    """An int8 twin of ``model`` calibrated on random frames: for timing only."""
    out = folder / f"{model.stem}.int8-{'-'.join(op_types)}-random.onnx"
    if not out.exists():
        w, h = size
        rng = np.random.default_rng(0)
        inputs = [rng.random((1, 3, h, w), dtype=np.float32) for _ in range(2)]
        out.write_bytes(quantize(model, inputs, Settings(op_types=op_types)))
    return out


def cpu_session(model: Path | bytes) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of a model file or its bytes."""
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def check(
    fp32: Path,
    int8: bytes,
    data: Path,
    names: Sequence[str],
    degradation: str,
    scale: int,
) -> Check:
    """PSNR of the degraded input, the fp32 and the int8 model on the test photos."""
    sessions = [cpu_session(fp32), cpu_session(int8)]
    scores: list[list[float]] = [[], [], []]
    for name in tqdm(names, desc=f"check {degradation}", unit="photo", leave=False):
        image = read_rgb(data / name)
        if image is None:
            raise QuantizeError(f"test photo {data / name} cannot be read: restore it")
        degraded, baseline, truth = degraded_pair(image, degradation, scale)
        scores[0].append(_psnr(baseline, truth))
        for k, session in enumerate(sessions, start=1):
            (out,) = session.run(None, {INPUT_NAME: to_input(degraded)})
            pixels = np.clip(out[0].transpose(1, 2, 0) * 255.0, 0, 255).round()
            scores[k].append(_psnr(pixels, truth))
    means = [float(np.mean(s)) for s in scores]
    return Check(degradation, len(names), *means)


def trained_on_call(spec: str) -> bool:
    """Whether a ``--degradation`` spec (a run's, or a model's ``sharpcam.degradation``) has a
    ``call`` or ``codec`` part; lenient: an unparsable spec has none."""
    return bool({"call", "codec"} & {p.split(":")[0].strip() for p in spec.split(",")})


def run_degradations(run: Path, scale: int) -> list[str]:
    """The clip degradations to check: ``seed``, and for a run trained on ``call``
    (``RUN/config.json``) the low-rate H.264 and VP8 calls (and, for ``restore``, blocking)."""
    names = ["seed"]
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return names
    if trained_on_call(str(config.get("degradation", ""))):
        names += ["call-h264-low", "call-vp8-low"] + (["blocking"] if scale == 1 else [])
    return names


def export_int8(
    model: Path, data: Path, run: Path, out: Path, settings: Settings
) -> tuple[list[Check], bool]:
    """Quantize, check, and write ``out`` only when every check holds.

    Returns:
        The checks and whether the file was written.

    Raises:
        QuantizeError, DataError: bad input (missing files, unreadable split).
    """
    if not model.is_file():
        raise QuantizeError(f"model {model} does not exist: pass --model with an ONNX file")
    split_path = run / "split.json"
    if not split_path.is_file():
        raise QuantizeError(f"{split_path} does not exist: pass --run with a training run folder")
    split = Split.load(split_path)
    split.verify(data)
    source = onnx.load(str(model), load_external_data=False)
    scale = model_scale(source)
    degradations = run_degradations(run, scale)
    train = (*split.train_a, *split.train_b)
    inputs = calibration_inputs(data, train, degradations, scale, settings)
    int8 = quantize(model, inputs, settings)
    test = list(split.test[: settings.test_images] if settings.test_images else split.test)
    checks = [check(model, int8, data, test, d, scale) for d in degradations]
    if any(not c.loss <= settings.max_loss_db for c in checks):
        return checks, False
    proto = onnx.load_from_string(int8)
    for key, value in (
        ("sharpcam.precision", "int8: QDQ, convolutions only (uint8 activations, int8 "
         f"per-channel weights; {kept_float(source)}), min-max calibration "
         f"on {len(inputs)} crops of training photos"),
        ("sharpcam.int8_check", "; ".join(c.line() for c in checks)),
    ):  # fmt: skip
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, proto.SerializeToString())
    return checks, True


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.quantize``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="fp32 sharpcam ONNX model")
    parser.add_argument("--data", type=Path, required=True, help="folder of the run's photos")
    parser.add_argument("--run", type=Path, required=True, help="run folder (split.json)")
    parser.add_argument("--out", type=Path, required=True, help="int8 ONNX file to write")
    parser.add_argument("--max-loss", type=float, default=MAX_LOSS_DB, help="dB (default 0.05)")
    parser.add_argument("--calibration-crops", type=int, default=Settings.calibration_crops)
    parser.add_argument("--test-images", type=int, default=None, help="default: all")
    args = parser.parse_args(argv)
    settings = Settings(
        max_loss_db=args.max_loss,
        calibration_crops=args.calibration_crops,
        test_images=args.test_images,
    )
    try:
        checks, written = export_int8(args.model, args.data, args.run, args.out, settings)
    except (QuantizeError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c in checks:
        print(c.line())
    if not written:
        worst = max(checks, key=lambda c: c.loss)
        print(
            f"refused: int8 loses {worst.loss:.3f} dB on the {worst.degradation} degradation "
            f"(allowed {settings.max_loss_db:g}); nothing written",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
