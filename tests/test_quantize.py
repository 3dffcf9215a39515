"""int8 export: calibration on training photos, the quality check accepting and refusing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sharpcam.contract import INPUT_NAME
from tests.synthetic import make_photo, write_photos
from training.data import make_split
from training.degradations import get_degradation
from training.onnx_io import export_model
from training.quantize import (
    Settings,
    calibration_inputs,
    export_int8,
    fixed_upsample_convs,
    main,
    run_degradations,
    zero_sum_convs,
)
from training.students import Ensemble, build_student


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(photos, run folder with split.json)``: 10 small self-made photos."""
    root = tmp_path_factory.mktemp("int8")
    photos = root / "photos"
    write_photos(photos, 10, height=96, width=128)
    run = root / "run"
    run.mkdir()
    make_split(photos).save(run / "split.json")
    return photos, run


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A ``fast`` student trained briefly on the photos: it sharpens (gains in float)."""
    degrade = get_degradation("seed")
    truths = [make_photo(96, 128, seed=i) for i in range(10)]
    x = torch.stack([torch.from_numpy(degrade(t)).permute(2, 0, 1) for t in truths]) / 255.0
    y = torch.stack([torch.from_numpy(t).permute(2, 0, 1) for t in truths]) / 255.0
    torch.manual_seed(0)
    student = build_student("fast")
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(60):
        loss = (student(x) - y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return student.fuse().eval()


def export_student(student: torch.nn.Module, path: Path, *, outlier: float = 1.0) -> Path:
    """``student`` as an ONNX model.

    ``outlier`` > 1 scales the first layer's channel 0 up and its use in the next layer
    down by the same factor: the same function in float (leaky ReLU is positively
    homogeneous), but that activation channel then spans ``outlier`` times the others'
    range, which per-tensor uint8 activations cannot represent: quantization hurts.
    """
    student = copy.deepcopy(student)
    with torch.no_grad():
        student.head.weight[0] *= outlier
        student.body[1].weight[:, 0] /= outlier
    export_model(Ensemble([student]), path, metadata={"sharpcam.scale": "1"})
    return path


def test_calibration_uses_training_photos_only(run: tuple[Path, Path]) -> None:
    photos, _ = run
    split = make_split(photos)
    crops = calibration_inputs(
        photos, split.train_a, ["seed"], 1, Settings(calibration_crops=4, crop=64)
    )
    assert len(crops) == 4 and all(c.shape == (1, 3, 64, 64) for c in crops)
    assert all(c.dtype == np.float32 and c.min() >= 0 and c.max() <= 1 for c in crops)


def test_accepts_a_model_that_keeps_its_quality(
    run: tuple[Path, Path], trained: torch.nn.Module, tmp_path: Path
) -> None:
    photos, folder = run
    model = export_student(trained, tmp_path / "fast.onnx")
    out = tmp_path / "fast.int8.onnx"
    checks, written = export_int8(model, photos, folder, out, Settings(calibration_crops=8))
    assert written and out.is_file()
    assert [c.degradation for c in checks] == ["seed"]
    assert checks[0].fp32_psnr > checks[0].input_psnr and checks[0].loss <= 0.05
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["sharpcam.scale"] == "1" and "int8" in meta["sharpcam.precision"]
    assert "1 zero-sum first layer(s) kept float" in meta["sharpcam.precision"]
    assert "seed: input" in meta["sharpcam.int8_check"]
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    assert session.run(None, {INPUT_NAME: x})[0].shape == (1, 3, 32, 48)


def test_refuses_when_the_bar_cannot_be_met(
    run: tuple[Path, Path],
    trained: torch.nn.Module,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos, folder = run
    model = export_student(trained, tmp_path / "fast.onnx")
    out = tmp_path / "fast.int8.onnx"
    argv = ["--model", str(model), "--data", str(photos), "--run", str(folder), "--out", str(out)]
    assert main([*argv, "--max-loss", "-1", "--calibration-crops", "4"]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [model]
    err = capsys.readouterr().err.strip().splitlines()  # (tqdm's progress lines aside)
    assert err[-1].startswith("refused: int8 loses") and err[-1].endswith("nothing written")
    assert not [line for line in err[:-1] if line.startswith(("refused", "error"))]


def test_refuses_a_model_that_quantization_hurts(
    run: tuple[Path, Path], trained: torch.nn.Module, tmp_path: Path
) -> None:
    photos, folder = run
    model = export_student(trained, tmp_path / "outlier.onnx", outlier=1000.0)
    out = tmp_path / "outlier.int8.onnx"
    checks, written = export_int8(model, photos, folder, out, Settings(calibration_crops=8))
    assert not written and not out.exists()
    assert checks[0].fp32_psnr > checks[0].input_psnr  # a sharpener in float...
    assert checks[0].loss > 0.05  # ...that int8 breaks


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--model", str(tmp_path / "none.onnx"), "--data", str(tmp_path), "--run"]
    assert main([*argv, str(tmp_path), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_x2_model_is_checked_on_half_size_input(run: tuple[Path, Path], tmp_path: Path) -> None:
    photos, folder = run
    student = build_student("fast-x2").fuse()  # untrained: the bicubic x2 upsample
    model = tmp_path / "x2.onnx"
    export_model(Ensemble([student]), model, metadata={"sharpcam.scale": "2"})
    out = tmp_path / "x2.int8.onnx"
    checks, written = export_int8(model, photos, folder, out, Settings(calibration_crops=4))
    assert written
    # the fp32 model is bicubic, which is also what the input figure shows
    assert abs(checks[0].fp32_psnr - checks[0].input_psnr) < 0.01


def test_checks_follow_the_runs_degradation(tmp_path: Path) -> None:
    assert run_degradations(tmp_path, 1) == ["seed"]
    (tmp_path / "config.json").write_text(json.dumps({"degradation": "call:0.8,seed:0.2"}))
    assert run_degradations(tmp_path, 1) == ["seed", "call-h264-low", "call-vp8-low", "blocking"]
    assert run_degradations(tmp_path, 2) == ["seed", "call-h264-low", "call-vp8-low"]


def test_x2_bicubic_base_stays_float(run: tuple[Path, Path], tmp_path: Path) -> None:
    """The fixed bicubic convolution makes every output pixel's base: int8 would round it.
    So does the zero-sum first layer (see :func:`test_zero_sum_layer_stays_float`)."""
    photos, folder = run
    model = tmp_path / "x2.onnx"
    export_model(
        Ensemble([build_student("fast-x2").fuse()]), model, metadata={"sharpcam.scale": "2"}
    )
    proto = onnx.load(str(model))
    fixed, zero_sum = fixed_upsample_convs(proto), zero_sum_convs(proto)
    assert len(fixed) == 1 and len(zero_sum) == 1
    out = tmp_path / "x2.int8.onnx"
    export_int8(model, photos, folder, out, Settings(calibration_crops=4))
    graph = onnx.load(str(out)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert convs[fixed[0]].input[1] not in dequantized  # its weights stay float
    assert convs[zero_sum[0]].input[1] not in dequantized
    learned = [n for name, n in convs.items() if name not in {*fixed, *zero_sum}]
    assert learned and all(n.input[1] in dequantized for n in learned)  # the rest is int8


def test_zero_sum_layer_stays_float(
    run: tuple[Path, Path], trained: torch.nn.Module, tmp_path: Path
) -> None:
    """The fast student's first layer sums to zero per output channel, so flat areas get
    no residual; int8 weights would break the sum. It is found by its weights, and only it:
    the trained layers after it are quantized."""
    photos, folder = run
    model = export_student(trained, tmp_path / "fast.onnx")
    proto = onnx.load(str(model))
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    assert zero_sum_convs(proto) == convs[:1]
    out = tmp_path / "fast.int8.onnx"
    export_int8(model, photos, folder, out, Settings(calibration_crops=4))
    graph = onnx.load(str(out)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    weights = {n.name: n.input[1] for n in graph.node if n.op_type == "Conv"}
    assert [name for name in convs if weights[name] not in dequantized] == convs[:1]
    # flat frames stay flat through the int8 model, as through the float one
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for level in (0.1, 0.5, 0.9):
        flat = np.full((1, 3, 32, 48), level, np.float32)
        (got,) = session.run(None, {INPUT_NAME: flat})
        assert np.abs(got - flat).max() < 1e-6
