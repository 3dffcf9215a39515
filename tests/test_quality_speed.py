"""The quality-vs-speed plot on a tiny report and tiny self-made ONNX models (no timing
assertions: speed is a benchmark, never a test)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from tests.helpers_models import nearest_x2_model, set_metadata, unsharp_model
from training.evaluate_video import IDENTITY
from training.peers import DEFAULT_PEERS, PEERS
from training.quality_speed import main, mean_gains, report_row

UNSHARP = "unsharp mask (sigma 1, amount 0.5)"
BICUBIC = "bicubic x2 (of the decoded half-size frames)"


def row(method: str, gain: float, scale: int = 1) -> dict[str, object]:
    return {
        "method": method, "scale": scale, "psnr": 30.0 + gain, "ssim": 0.9, "psnr_gain": gain,
        "ssim_gain": 0.0, "flicker": 1.0, "flicker_ratio": 1.0, "vmaf": None,
    }  # fmt: skip


def write_report(path: Path) -> Path:
    """Two evaluation clips and a training clip (ignored), call-h264-low and blocking."""
    results = []
    for clip, role, offset in (("grid_lwbsza_a", "evaluation", 0.0),
                               ("xiph_akiyo_b", "evaluation", 0.2),
                               ("train_clip", "training", 9.0)):  # fmt: skip
        rows = [
            row(IDENTITY, 0.0),
            row(UNSHARP, -0.5 + offset),
            row(BICUBIC, 0.0, 2),
            *(row(name, 0.3 + offset, 2) for name in PEERS),
            row("sharpcam one.onnx (x1)", 0.4 + offset),
            row("sharpcam two.onnx (x2)", 0.6 + offset, 2),
            row("sharpcam two.onnx (x2) + stabilizer", 0.5 + offset, 2),
        ]
        for degradation in ("call-h264-low", "blocking"):
            results.append(
                {"clip": clip, "role": role, "degradation": degradation, "frames": 8,
                 "size": "96x96", "params": {}, "rows": rows, "skipped": []}
            )  # fmt: skip
    path.write_text(json.dumps({"notes": [], "results": results}))
    return path


@pytest.fixture()
def models(tmp_path: Path) -> list[Path]:
    one = set_metadata(unsharp_model(tmp_path / "one.onnx"), tier="fast", mode="restore")
    return [one, nearest_x2_model(tmp_path / "two.onnx")]


def test_mean_gains_over_the_evaluation_clips_and_the_stabilized_row(tmp_path: Path) -> None:
    report = json.loads(write_report(tmp_path / "report.json").read_text())
    gains, clips, which = mean_gains(report, "call-h264-low")
    assert clips == 2 and which == "evaluation clips (degraded input 30.00 dB, SSIM 0.9000)"
    assert gains[UNSHARP] == pytest.approx(-0.4) and gains[IDENTITY] == 0.0
    assert report_row(gains, "sharpcam two.onnx (x2)") == "sharpcam two.onnx (x2) + stabilizer"
    assert report_row(gains, "sharpcam one.onnx (x1)") == "sharpcam one.onnx (x1)"
    assert report_row(gains, "sharpcam three.onnx (x1)") is None


def test_writes_a_png_and_a_json_with_one_point_per_method(
    tmp_path: Path, models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    report = write_report(tmp_path / "report.json")
    out = tmp_path / "plots" / "quality_speed.png"
    extra = unsharp_model(tmp_path / "three.onnx")  # not in the report: not timed
    argv = ["--report", str(report), "--models", *map(str, [*models, extra]), "--out", str(out)]
    assert main([*argv, "--peers", str(tmp_path / "no-peers"), "--rounds", "2"]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 500
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["degradation"] == "call-h264-low" and payload["clips"] == 2
    points = {p["method"]: p for p in payload["points"]}
    assert set(points) == {
        "bicubic x2", "unsharp mask", "sharpcam one (fast)", "sharpcam two (quality) + stabilizer",
    }  # fmt: skip
    assert points["sharpcam two (quality) + stabilizer"]["psnr_gain"] == pytest.approx(0.6)
    assert points["sharpcam two (quality) + stabilizer"]["kind"] == "x2"
    assert points["sharpcam one (fast)"]["kind"] == "restore"
    assert points["bicubic x2"]["psnr_gain"] == 0.0
    for p in points.values():
        assert 0 < p["ms_median"] <= p["ms_p95"]
        assert p["backend"] in p["backends"] or not p["method"].startswith("sharpcam")
    skipped = dict(map(tuple, payload["skipped"]))
    assert set(PEERS) <= set(skipped)
    assert all("not found" in skipped[name] for name in PEERS)
    assert "no row in the report" in skipped["sharpcam three (quality)"]
    printed = capsys.readouterr().out
    assert "sharpcam two (quality) + stabilizer" in printed and "skipped FSRCNN x2" in printed


@pytest.mark.skipif(not DEFAULT_PEERS.is_dir(), reason="../shared/peers absent")
def test_the_peers_get_their_points(tmp_path: Path) -> None:
    report = write_report(tmp_path / "report.json")
    out = tmp_path / "qs.png"
    assert main(["--report", str(report), "--out", str(out), "--rounds", "1"]) == 0
    points = {p["method"]: p for p in json.loads(out.with_suffix(".json").read_text())["points"]}
    for name in PEERS:
        assert points[name]["psnr_gain"] == pytest.approx(0.4) and points[name]["kind"] == "x2"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--degradation", "seed"], "no seed results"),
        (["--models", "/nonexistent.onnx"], "does not exist"),
        (["--rounds", "0"], "--rounds"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, extra: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = write_report(tmp_path / "report.json")
    assert main(["--report", str(report), "--out", str(tmp_path / "x.png"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_a_missing_report_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--report", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "training.evaluate_video" in capsys.readouterr().err
