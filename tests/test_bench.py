"""``sharpcam bench`` in quick mode on a tiny model: the table is printed (no speed checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_media import make_clip
from helpers_models import nearest_x2_model, unsharp_model

from sharpcam import bench, cli
from sharpcam.backends import openvino as ov_backend
from sharpcam.engine import Engine
from sharpcam.errors import UsageError


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsharp_model(tmp_path_factory.mktemp("m") / "unsharp.onnx")


def test_quick_table(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--model", model, "--sizes", "64x48,360p", "--repeat", "2", "--warmup", "0"]
    assert cli.main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| tier |")))
    rows = [line for line in lines[header + 2 :] if line.startswith("| ")]
    backends = 2 if ov_backend.available() else 1
    assert len(rows) == 2 * backends
    assert "| quality | restore | onnxruntime cpu | 64x48 |" in rows[0]
    assert any("| 360p (640x360) |" in row for row in rows)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 10
        assert all(float(c) >= 0 for c in cells[4:7])
        median, p95, fps = (float(c) for c in cells[4:7])
        assert p95 >= median
        if median >= 1.0:  # fps is printed from the unrounded median
            assert fps == pytest.approx(1000 / median, rel=0.06)
        if ov_backend.available():  # it counts multiply-adds in the graph
            assert cells[7] == "27*" and float(cells[8]) > 0 and cells[9].endswith("%")
    assert "whole call per frame" in out and "an estimate, not a measurement" in out
    assert "MAC/px*: counted from the graph" in out or not ov_backend.available()


def test_x2_model_and_macs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x2 = nearest_x2_model(tmp_path / "x2.onnx")  # says 3 multiply-adds per output pixel
    argv = ["--model", x2, "--backends", "onnxruntime", "--providers", "cpu"]
    argv += ["--x2-sizes", "40x30", "--repeat", "2", "--warmup", "0"]
    assert bench.main([str(a) for a in argv]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| quality")]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:4] == ["quality", "x2", "onnxruntime cpu", "40x30 → 80x60"]
    assert cells[7] == "3" and float(cells[8]) > 0 and cells[9].endswith("%")


def test_rows_are_consistent(model: Path) -> None:
    """Figures that can be wrong: timings positive, p95 not below the median, fps the
    inverse of the whole call, both engines timed at every size."""
    engines = [Engine(model, provider="cpu"), Engine(model, provider="cpu", io="host")]
    rows = bench.bench_variants(engines, [("64x48", (64, 48)), ("360p", (640, 360))], 7, 1)
    assert [r.size for r in rows] == ["64x48"] * 2 + ["360p (640x360)"] * 2
    for r in rows:
        assert 0 < r.median <= r.p95
        assert r.fps == pytest.approx(1000 / r.median)
        assert r.out_pixels in (64 * 48, 640 * 360)


def test_io_compare_and_clip(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=6, width=64, height=48, audio=True)
    argv = [
        "--model", model, "--providers", "cpu", "--sizes", "40x30", "--repeat", "5",
        "--warmup", "1", "--io-compare", "--clip", clip,
    ]  # fmt: skip
    assert bench.main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "cpu 40x30: host " in out and " graph " in out
    assert "c.mp4 (64x48) -> H.264 on cpu: 6 frames in" in out and "outside the model" in out


def test_usage_errors(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--model", str(model), "--providers", "gpu"]) == 2
    assert "unknown provider 'gpu'" in capsys.readouterr().err
    assert bench.main(["--model", str(model), "--repeat", "0"]) == 2
    with pytest.raises(UsageError, match="unknown size '720i'"):
        bench.parse_size("720i")
    assert bench.parse_size("1366x768") == ("1366x768", (1366, 768))


def test_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--model", str(tmp_path / "none.onnx"), "--providers", "cpu"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_no_abbreviated_options(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench --provider cpu` is an error, not a silent `--providers cpu`."""
    with pytest.raises(SystemExit) as info:
        bench.main(["--model", str(model), "--provider", "cpu"])
    assert info.value.code == 2
    assert "unrecognized arguments: --provider" in capsys.readouterr().err


def test_skipped_providers_get_no_advice_bench_cannot_take(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--model", str(model), "--sizes", "40x30", "--repeat", "1"]) == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if ": skipped (" in line]
    if not skipped:
        pytest.skip("every provider runs here")
    assert all("--provider " not in line for line in skipped), skipped


def test_small_rates_keep_their_digits() -> None:
    """A tiny model's rate (3 MAC/px on 80x60 in 0.5 ms: 0.0288 GMAC/s) must not print 0.0."""
    row = bench.Row("quality", "x2", "onnxruntime cpu", "40x30 → 80x60", 0.5, 0.6, 3, 80 * 60)
    big = bench.Row("fast", "restore", "openvino f32", "720p", 58.5, 73.7, 2592, 1280 * 720)
    table = bench.format_table([row, big], None)
    assert "| 0.0288 |" in table and "| 40.8 |" in table
