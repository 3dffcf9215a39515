"""The call-video benchmark on a tiny self-made clip, with tiny self-made ONNX models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.helpers_media import make_clip
from tests.synthetic import make_photo
from training.evaluate_video import IDENTITY, OnnxModel, face_box, main
from training.metrics import fast_scores, flicker, image_scores


def tiny_model(path: Path, scale: int) -> Path:
    """``frames`` -> ``sharpened``: x1.02 (scale 1) or a nearest x2 upscale (scale 2)."""
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("sharpened", TensorProto.FLOAT, ["N", 3, "h", "w"])
    if scale == 1:
        nodes = [helper.make_node("Mul", ["frames", "k"], ["sharpened"])]
        inits = [helper.make_tensor("k", TensorProto.FLOAT, [], [1.02])]
    else:
        nodes = [helper.make_node("Resize", ["frames", "", "s"], ["sharpened"], mode="nearest")]
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, {"sharpcam.scale": str(scale)})
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder / "grid_lwbsza_tiny.mp4", frames=8, width=96, height=96)
    return folder


def test_benchmark_on_a_tiny_clip(clip_dir: Path, tmp_path: Path, capsys) -> None:
    models = [tiny_model(tmp_path / "one.onnx", 1), tiny_model(tmp_path / "two.onnx", 2)]
    out = tmp_path / "out"
    argv = ["--clips", str(clip_dir), "--models", *map(str, models), "--out", str(out)]
    assert main([*argv, "--peers", str(tmp_path / "no-peers")]) == 0
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    assert [r["degradation"] for r in results] == [
        "seed",
        "call-h264-low",
        "call-vp8-low",
        "blocking",
    ]
    assert all(r["role"] == "evaluation" for r in results)
    assert sum("peer skipped" in n for n in report["notes"]) == 3
    for r in results:
        rows = {row["method"]: row for row in r["rows"]}
        identity = r["rows"][0]
        assert identity["method"] == IDENTITY and identity["psnr_gain"] == 0
        assert identity["flicker_ratio"] == pytest.approx(1.0)
        assert 10 < identity["psnr"] < 60 and 0 < identity["ssim"] <= 1
        assert "sharpcam one.onnx (x1)" in rows
        assert rows["sharpcam one.onnx (x1)"]["psnr_gain"] != 0
        if r["degradation"] == "blocking":
            assert "sharpcam two.onnx (x2)" not in rows
            assert any("two.onnx" in name for name, _ in r["skipped"])
        else:
            bicubic = next(v for k, v in rows.items() if k.startswith("bicubic"))
            assert bicubic["psnr_gain"] == pytest.approx(0.0, abs=1e-9)
            assert np.isfinite(rows["sharpcam two.onnx (x2)"]["psnr"])
    assert (out / "faces" / "grid_lwbsza_tiny.png").stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "## call-vp8-low" in markdown and IDENTITY in markdown
    assert "## call-vp8-low" in capsys.readouterr().out


def test_onnx_model_reads_its_scale(tmp_path: Path) -> None:
    frame = make_photo(30, 42)
    one = OnnxModel(tiny_model(tmp_path / "one.onnx", 1))
    two = OnnxModel(tiny_model(tmp_path / "two.onnx", 2))
    assert one.scale == 1 and one(frame).shape == (30, 42, 3)
    assert two.scale == 2 and two(frame).shape == (60, 84, 3)
    assert np.array_equal(two(frame)[::2, ::2], frame)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--clips", "/nonexistent/clips"], "does not exist"),
        (["--clips", ".", "--models", "/nonexistent.onnx"], "model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], match: str, tmp_path: Path, capsys, clip_dir: Path
) -> None:
    if argv[1] == ".":
        argv[1] = str(clip_dir)
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err


def test_face_box_is_inside_the_frame() -> None:
    y, x, h, w = face_box(make_photo(90, 120))
    assert y >= 0 and x >= 0 and y + h <= 90 and x + w <= 120 and h == w > 0


class TestFlicker:
    def test_the_truth_does_not_flicker(self) -> None:
        frames = [make_photo(20, 20, seed=s) for s in range(4)]
        assert flicker(frames, frames) == 0.0

    def test_a_constant_offset_does_not_flicker(self) -> None:
        frames = [np.full((8, 8, 3), 100 + 10 * t, np.uint8) for t in range(4)]
        brighter = [f + 5 for f in frames]
        assert flicker(brighter, frames) == 0.0

    def test_a_frozen_output_scores_the_truths_motion(self) -> None:
        truth = [np.full((8, 8, 3), 10 * t, np.uint8) for t in range(5)]
        frozen = [truth[0]] * 5
        assert flicker(frozen, truth) == pytest.approx(10.0)

    def test_too_short_or_unequal_is_refused(self) -> None:
        with pytest.raises(ValueError, match="two equally long"):
            flicker([np.zeros((4, 4, 3), np.uint8)], [np.zeros((4, 4, 3), np.uint8)])


def test_fast_scores_match_the_torch_metrics() -> None:
    a = make_photo(64, 80, seed=1)
    b = np.clip(a.astype(int) + np.random.default_rng(0).integers(-9, 10, a.shape), 0, 255)
    b = b.astype(np.uint8)
    fast, ref = fast_scores(b, a), image_scores(b, a)
    assert fast[0] == pytest.approx(ref[0], abs=1e-6)
    assert fast[1] == pytest.approx(ref[1], abs=1e-5)


@pytest.mark.parametrize(
    ("flag", "bare", "stable"), [([], True, True), (["--stabilize"], False, True)]
)
def test_stabilizer_rows(
    clip_dir: Path, tmp_path: Path, flag: list[str], bare: bool, stable: bool
) -> None:
    model = tiny_model(tmp_path / "one.onnx", 1)
    out = tmp_path / "out"
    argv = ["--clips", str(clip_dir), "--models", str(model), "--out", str(out)]
    argv += ["--degradations", "blocking", "--peers", str(tmp_path / "no-peers"), *flag]
    assert main(argv) == 0
    (result,) = json.loads((out / "report.json").read_text())["results"]
    rows = {row["method"]: row for row in result["rows"]}
    assert ("sharpcam one.onnx (x1)" in rows) == bare
    assert ("sharpcam one.onnx (x1) + stabilizer" in rows) == stable
    row = rows["sharpcam one.onnx (x1) + stabilizer"]
    assert np.isfinite(row["psnr"]) and row["flicker_ratio"] > 0
