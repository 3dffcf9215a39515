"""The OpenVINO backend against ONNX Runtime on real frames (≤ 1/255), its contract checks,
and a quantized (QDQ) model. Skipped with a reason when openvino is not installed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_models import broken_model, nearest_x2, nearest_x2_model, torch_model

from sharpcam.backends import openvino as ov_backend
from sharpcam.contract import REPO_MODEL
from sharpcam.engine import Engine
from sharpcam.errors import ModelError, ProviderError

pytestmark = pytest.mark.skipif(
    not ov_backend.available(), reason="openvino is not installed (pip install openvino)"
)


def degraded_photos(photos_dir: Path, count: int = 3) -> list[np.ndarray]:
    """Crops of real photos with the seed degradation (x1/2 linear, x2 cubic), odd-sized
    so padding and cropping are exercised."""
    frames = []
    for path in sorted(photos_dir.glob("*.jpg"))[:count]:
        image = cv2.imread(str(path))
        assert image is not None, path
        crop = np.ascontiguousarray(image[:203, :301])
        small = cv2.resize(crop, (150, 101), interpolation=cv2.INTER_LINEAR)
        frames.append(cv2.resize(small, (301, 203), interpolation=cv2.INTER_CUBIC))
    if not frames:
        pytest.skip(f"no .jpg photos in {photos_dir}")
    return frames


@pytest.mark.parametrize("precision", ["f32", "auto"])
def test_parity_with_onnxruntime_on_real_frames(photos_dir: Path, precision: str) -> None:
    if not REPO_MODEL.is_file():
        pytest.skip(f"{REPO_MODEL} is absent")
    ort = Engine(REPO_MODEL, provider="cpu")
    ov = Engine(REPO_MODEL, backend="openvino", precision=precision)
    assert ov.backend == "openvino" and ov.provider == "cpu"
    changed = 0
    for frame in degraded_photos(photos_dir):
        a = ort.process(frame, bgr=True).astype(np.int16)
        b = ov.process(frame, bgr=True).astype(np.int16)
        changed += int(np.count_nonzero(a != frame))
        assert np.abs(a - b).max() <= 1  # 1/255
    assert changed > 0  # the model did something to compare


def test_parity_on_a_torch_model(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    torch_model(path)
    frame = np.random.default_rng(0).integers(0, 256, (45, 67, 3), dtype=np.uint8)
    a = Engine(path, provider="cpu").process(frame).astype(np.int16)
    b = Engine(path, backend="openvino", precision="f32").process(frame).astype(np.int16)
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_identity_round_trips_every_level_exactly(tmp_path: Path, backend: str) -> None:
    """The uint8 cast, layout change and round-half-up give every level back unchanged:
    OpenVINO does the cast and layout in its pre/postprocessing, ONNX Runtime in graph nodes;
    a cast that rounded instead of truncating after the +0.5 would move half the levels."""
    path = broken_model(tmp_path / "identity.onnx")
    levels = np.arange(256, dtype=np.uint8)
    frame = np.stack([np.roll(levels, k) for k in range(3)], axis=-1)  # 256 levels per channel
    frame = np.ascontiguousarray(np.broadcast_to(frame[None], (19, 256, 3)))
    engine = Engine(path, backend=backend, provider="cpu", precision="f32")
    np.testing.assert_array_equal(engine.process(frame), frame)
    np.testing.assert_array_equal(engine.process(frame, bgr=True), frame)


def test_x2_layout_on_openvino(tmp_path: Path) -> None:
    """A ×2 model's output comes back in the right place (NHWC, cropped), odd size."""
    path = nearest_x2_model(tmp_path / "nearest.onnx")
    frame = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = Engine(path, backend="openvino", precision="f32", upscale=2).process(frame)
    np.testing.assert_array_equal(out, nearest_x2(frame))


def test_bf16_follows_the_cpu() -> None:
    import openvino as ov

    engine = Engine(REPO_MODEL if REPO_MODEL.is_file() else None, backend="openvino")
    want = "bf16" if ov_backend.cpu_has_bf16(ov.Core()) else "f32"
    assert engine.precision == want and engine.describe() == f"openvino {want}"


def test_contract_problem_is_one_line(tmp_path: Path) -> None:
    path = broken_model(tmp_path / "x.onnx", input_name="x")
    with pytest.raises(ModelError, match="does not follow the sharpcam contract: input 'x'"):
        Engine(path, backend="openvino")


def test_unreadable_model(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match=r"openvino cannot read model .*bad\.onnx"):
        Engine(path, backend="openvino")


def test_unknown_backend() -> None:
    with pytest.raises(ProviderError, match="unknown backend 'tpu'"):
        Engine(None, backend="tpu")


def quantized(fp32: Path, rng: np.random.Generator) -> Path:
    """``NAME.int8.onnx`` beside ``fp32``: its convolutions quantized (QDQ, U8S8) by ONNX
    Runtime's tool, calibrated on a few random frames."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [{"frames": rng.random((1, 3, 32, 40), dtype=np.float32)} for _ in range(4)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    int8 = fp32.with_name(fp32.stem + ".int8.onnx")
    quantize_static(
        str(fp32), str(int8), Frames(), op_types_to_quantize=["Conv"],
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return int8


def test_int8_qdq_model_runs_as_int8(tmp_path: Path) -> None:
    fp32 = tmp_path / "tiny.onnx"
    torch_model(fp32)
    rng = np.random.default_rng(0)
    int8 = quantized(fp32, rng)
    engine = Engine(int8, backend="openvino", precision="f32")
    assert engine.precision == "f32 + int8" and engine.info.int8
    frame = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    ref = Engine(fp32, provider="cpu").process(frame).astype(np.int16)
    assert np.abs(engine.process(frame).astype(np.int16) - ref).mean() < 3


def test_auto_times_the_int8_twin(tmp_path: Path) -> None:
    """``models/NAME.int8.onnx`` beside ``NAME.onnx``: the tier is still one model, and the
    start-up probe times its int8 twin on OpenVINO beside the fp32 file on both backends."""
    import json

    from sharpcam.models import find_models
    from sharpcam.runtime import EngineSettings, open_engine

    folder = tmp_path / "models"
    folder.mkdir()
    fp32 = folder / "sharpcam.onnx"
    torch_model(fp32)
    quantized(fp32, np.random.default_rng(1))
    assert [i.path.name for i in find_models(folder, mode="restore").values()] == ["sharpcam.onnx"]
    settings = EngineSettings(models=folder, cache=tmp_path / "cache")
    engine = open_engine(settings, width=40, height=32, fps=30)
    assert engine.process(np.zeros((32, 40, 3), np.uint8)).shape == (32, 40, 3)
    probed = json.loads((tmp_path / "cache" / "probes.json").read_text())
    assert sum("sharpcam.int8.onnx" in key and "+ int8" in key for key in probed) == 1
    assert sum("/sharpcam.onnx:" in key for key in probed) == 2  # onnxruntime, openvino


def test_bench_times_the_int8_twin_beside_its_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sharpcam bench`` without ``--model`` times each tier's int8 twin interleaved with
    it, on every backend, as a row of its own."""
    from sharpcam import bench

    folder = tmp_path / "models"
    folder.mkdir()
    fp32 = folder / "sharpcam.onnx"
    torch_model(fp32)
    quantized(fp32, np.random.default_rng(1))
    monkeypatch.setenv("SHARPCAM_MODELS", str(folder))
    argv = ["--sizes", "64x48", "--repeat", "2", "--warmup", "0", "--providers", "cpu"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| tier ")]
    tiers = [line.split("|")[1].strip() for line in rows]
    assert tiers.count("quality") == 2 and tiers.count("quality int8") == 2  # ORT, OpenVINO
    assert any("openvino" in r and "+ int8" in r for r in rows)


def test_macs_counted_from_the_graph(tmp_path: Path) -> None:
    from helpers_models import nearest_x2_model, unsharp_model

    from sharpcam.models import count_macs_per_pixel

    assert count_macs_per_pixel(unsharp_model(tmp_path / "u.onnx")) == 27  # 3 x 3x3 depthwise
    assert count_macs_per_pixel(nearest_x2_model(tmp_path / "x2.onnx")) == 9  # 36 / 4 pixels
    if REPO_MODEL.is_file():  # two students of 10.9k each (the model card's figure)
        assert count_macs_per_pixel(REPO_MODEL) == pytest.approx(21_900, rel=0.01)


def test_nan_output_is_caught(tmp_path: Path) -> None:
    """The wrapper's check output reaches OpenVINO's plan too: NaN is an error, not black."""
    from helpers_models import IR_VERSION, OPSET
    from onnx import TensorProto, helper, numpy_helper, save

    from sharpcam.contract import INPUT_NAME, OUTPUT_NAME

    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "c"], ["d"]),
        helper.make_node("Sqrt", ["d"], [OUTPUT_NAME]),  # NaN on dark pixels
    ]
    c = numpy_helper.from_array(np.array(0.5, np.float32), "c")
    graph = helper.make_graph(nodes, "nan", [x], [y], [c])
    path = tmp_path / "nan.onnx"
    save(
        helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
        ),
        str(path),
    )
    engine = Engine(path, backend="openvino")
    frame = np.full((30, 41, 3), 200, np.uint8)
    assert engine.process(frame).shape == frame.shape
    frame[10, 20] = 3
    with pytest.raises(ModelError, match=r"nan\.onnx output NaN or Inf on frame 2"):
        engine.process(frame)
