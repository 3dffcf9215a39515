"""The ``sharpcam`` command in-process (``main(argv)``): outcomes and the errors a user must
get right, each asserting its one-line message and exit code. Real ONNX Runtime, PyAV and
OpenCV; only the webcam and the virtual camera are fakes where a test needs them working."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import pyvirtualcam
from helpers_media import (
    FakeCapture,
    RecordingCamera,
    audio_payloads,
    decode_rgb,
    make_clip,
    video_times,
)
from helpers_models import broken_model, unsharp_model

from sharpcam import cli
from sharpcam.engine import Engine
from sharpcam.sources import list_cameras


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsharp_model(tmp_path_factory.mktemp("m") / "unsharp.onnx")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "call.mp4"
    make_clip(path, frames=12, width=96, height=64, audio=True)
    return path


@pytest.fixture
def fake_vcam(monkeypatch: pytest.MonkeyPatch) -> type[RecordingCamera]:
    monkeypatch.setattr(pyvirtualcam, "Camera", RecordingCamera)
    monkeypatch.setattr(RecordingCamera, "instances", [])
    return RecordingCamera


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one ``sharpcam: error:`` line (there must be exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith("sharpcam: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("sharpcam: error: ")


class TestHelp:
    def test_short_and_grouped(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as info:
            cli.main(["--help"])
        out = capsys.readouterr().out
        assert info.value.code == 0
        for heading in ("input (one of):", "output (any of", "model:", "run:", "commands ("):
            assert heading in out
        assert "--provider {auto,tensorrt,cuda,cpu}" in out and "(default: auto)" in out
        assert "(default: None)" not in out and len(out.splitlines()) <= 60

    def test_version_from_python_m(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "sharpcam", "--version"], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stdout.startswith("sharpcam ")


class TestFileRun:
    def test_file_to_file(
        self, tmp_path: Path, model: Path, clip: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "sharp.mp4"
        code, _, err = run(["--input", clip, "--output", out, "--model", model], capsys)
        assert code == 0, err
        assert "provider: cpu" in err and "call.mp4: 96x64 @ 25 fps" in err
        assert "summary: 12 frames in, 12 out, 0 dropped" in err
        assert len(decode_rgb(out)) == 12
        assert video_times(out) == pytest.approx(video_times(clip), abs=1e-3)
        assert audio_payloads(out) == audio_payloads(clip)

    def test_interrupted_file_run_writes_nothing(
        self,
        tmp_path: Path,
        model: Path,
        clip: Path,
        capsys: pytest.CaptureFixture[str],
        ctrl_c_at_third_frame: None,
    ) -> None:
        out = tmp_path / "sharp.mp4"
        code, _, err = run(["--input", clip, "--output", out, "--model", model], capsys)
        assert code == 130
        assert err.count("sharpcam: interrupted") == 1
        assert err.count(f"{out} not written") == 1  # said once, by the output itself
        assert list(tmp_path.iterdir()) == []


class TestLiveRun:
    def test_camera_to_virtual_camera_by_default(
        self,
        model: Path,
        fake_camera: type[FakeCapture],
        fake_vcam: type[RecordingCamera],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        code, _, err = run(["--device", "0", "--model", model, "--max-frames", "5"], capsys)
        assert code == 0, err
        cam = fake_vcam.instances[0]
        assert (cam.width, cam.height) == (64, 48) and len(cam.frames) == 5 and cam.closed
        assert cam.paced == 0  # a camera paces itself
        assert "virtual camera ready: choose" in err and "camera 0: 64x48" in err
        assert "summary: " in err and "5 out" in err

    def test_camera_lost_mid_stream_finishes_outputs(
        self,
        tmp_path: Path,
        model: Path,
        fake_camera: type[FakeCapture],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        fake_camera.FAIL_AFTER = 10
        out = tmp_path / "rec.mp4"
        code, _, err = run(["--device", "0", "--output", out, "--model", model], capsys)
        assert code == 1
        assert error_line(err) == (
            "camera 0 stopped delivering frames after 10 frames (unplugged, or taken by "
            "another program?); outputs were finished"
        )
        assert "summary: 10 frames in" in err
        frames = decode_rgb(out)  # complete, playable file
        assert 1 <= len(frames) <= 10 and frames[0].shape == (48, 64, 3)

    def test_file_into_the_virtual_camera_is_paced(
        self,
        model: Path,
        clip: Path,
        fake_vcam: type[RecordingCamera],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        code, _, err = run(["--input", clip, "--virtual-camera", "--model", model], capsys)
        assert code == 0, err
        cam = fake_vcam.instances[0]
        assert len(cam.frames) == 12 and cam.paced == 12 and cam.fps == 25.0

    def test_list_devices(
        self, fake_camera: type[FakeCapture], capsys: pytest.CaptureFixture[str]
    ) -> None:
        fake_camera.OPENABLE = {0, 2}
        code, out, _ = run(["--list-devices"], capsys)
        assert code == 0 and out.strip() == "cameras that open: 0, 2"


# -- the errors a user must get right ------------------------------------------------------------

Case = Callable[[Path, Path, Path], list[object]]


def _text_file(tmp: Path) -> Path:
    path = tmp / "notes.mp4"
    path.write_text("this is not a video")
    return path


def _corrupt_model(tmp: Path) -> Path:
    path = tmp / "corrupt.onnx"
    path.write_bytes(b"\x0a\x05junk" * 50)
    return path


def _rgba_model(tmp: Path) -> Path:
    return broken_model(tmp / "rgba.onnx", channels=4)


ERRORS: dict[str, tuple[Case, int, str]] = {
    "named model missing": (
        lambda t, m, c: ["--input", c, "--output", t / "o.mp4", "--model", t / "none.onnx"],
        1,
        r"model file .*none\.onnx does not exist; pass another --model PATH$",
    ),
    "corrupt model": (
        lambda t, m, c: ["--input", c, "--output", t / "o.mp4", "--model", _corrupt_model(t)],
        1,
        r"cannot load model .*corrupt\.onnx: .*the file is corrupt or not an ONNX model",
    ),
    "wrong input contract": (
        lambda t, m, c: ["--input", c, "--output", t / "o.mp4", "--model", _rgba_model(t)],
        1,
        r"model .*rgba\.onnx does not follow the sharpcam contract: input 'frames' has 4 "
        r"channels on axis 1, the contract needs 3 \(RGB\)$",
    ),
    "unreadable input video": (
        lambda t, m, c: ["--input", _text_file(t), "--output", t / "o.mp4", "--model", m],
        1,
        r"cannot read input video .*notes\.mp4: .*is it a video file that FFmpeg can decode\?$",
    ),
    "missing input video": (
        lambda t, m, c: ["--input", t / "gone.mp4", "--output", t / "o.mp4", "--model", m],
        1,
        r"input video .*gone\.mp4 does not exist; check the --input path$",
    ),
    "output folder missing": (
        lambda t, m, c: ["--input", c, "--output", t / "no" / "o.mp4", "--model", m],
        1,
        r"cannot write .*o\.mp4: folder .*no does not exist; create it first$",
    ),
    "output is a folder": (
        lambda t, m, c: ["--input", c, "--output", t, "--model", m],
        1,
        r"output .*work is a folder; name a file such as .*work/sharp\.mp4$",
    ),
    "unknown output format": (
        lambda t, m, c: ["--input", c, "--output", t / "o.gif", "--model", m],
        1,
        r"unknown output video format '\.gif'; name the file with one of \.mp4",
    ),
    "audio the output cannot hold": (
        lambda t, m, c: ["--input", c, "--output", t / "o.webm", "--model", m],
        1,
        r"\.webm cannot hold the input's aac audio; name the output \.mkv \(any codec\) or \.mp4$",
    ),
    "output is the input": (
        lambda t, m, c: ["--input", c, "--output", c, "--model", m],
        2,
        r"--output is the --input file; choose another output name$",
    ),
    "nothing to write": (
        lambda t, m, c: ["--input", c, "--model", m],
        2,
        r"nothing to write: add --output FILE \(or --preview, or --virtual-camera\)$",
    ),
    "device and input": (
        lambda t, m, c: ["--device", "0", "--input", c, "--model", m],
        2,
        r"give either --device or --input, not both$",
    ),
    "bad max frames": (
        lambda t, m, c: ["--input", c, "--output", t / "o.mp4", "--max-frames", "0"],
        2,
        r"--max-frames must be positive, got 0$",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error(
    case: str, tmp_path: Path, model: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_argv, exit_code, pattern = ERRORS[case]
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = run(make_argv(work, model, clip), capsys)
    assert code == exit_code
    assert re.search(pattern, error_line(err)), error_line(err)
    assert not [p for p in work.iterdir() if "partial" in p.name]
    assert not (work / "o.mp4").exists() and not (work / "o.webm").exists()


def test_default_model_missing_says_how_to_make_one(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARPCAM_MODEL", str(tmp_path / "sharpcam.onnx"))
    code, _, err = run(["--input", clip, "--output", tmp_path / "o.mp4"], capsys)
    assert code == 1
    assert error_line(err) == (
        f"model file {tmp_path / 'sharpcam.onnx'} does not exist; pass --model PATH, or make "
        "one with `python -m training.distill`"
    )


def test_camera_that_does_not_open_lists_those_that_do(
    model: Path, fake_camera: type[FakeCapture], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_camera.OPENABLE = {0, 1}
    code, _, err = run(["--device", "4", "--model", model], capsys)
    assert code == 1
    assert error_line(err).endswith("cameras that open: 0, 1 (try --device 0)")
    assert error_line(err).startswith("camera 4 did not open")


def test_no_camera_here_for_real(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if list_cameras():
        pytest.skip("this machine has a camera")
    code, _, err = run(["--device", "0", "--model", model], capsys)
    assert code == 1
    assert "no camera opens here" in error_line(err) and "--input FILE" in error_line(err)


def test_no_virtual_camera_here_for_real(
    model: Path, fake_camera: type[FakeCapture], capsys: pytest.CaptureFixture[str]
) -> None:
    """Camera faked; pyvirtualcam real: this machine has no v4l2loopback device."""
    code, _, err = run(["--device", "0", "--model", model], capsys)
    if code == 0:
        pytest.skip("this machine has a virtual camera")
    line = error_line(err)
    assert code == 1
    assert line.startswith("no virtual camera (")
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=sharpcam" in line
    assert line.endswith("or use --preview or --output FILE instead")


def test_gpu_provider_unavailable(
    model: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--input", clip, "--output", tmp_path / "o.mp4", "--model", model]
    code, _, err = run([*argv, "--provider", "cuda"], capsys)
    if code == 0:
        pytest.skip("CUDA works here")
    assert code == 1
    assert error_line(err).startswith("provider 'cuda' cannot run here (")


# -- subcommands ---------------------------------------------------------------------------------


class TestServeDispatch:
    def test_passes_the_rest_to_webrtc_main(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        seen: list[list[str]] = []
        fake = types.ModuleType("sharpcam.webrtc")
        fake.main = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "sharpcam.webrtc", fake)
        assert cli.main(["serve", "--port", "9000"]) == 7
        assert seen == [["--port", "9000"]]

    def test_missing_module(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setitem(cli.COMMANDS, "serve", ("sharpcam.not_here", "x"))
        code, _, err = run(["serve"], capsys)
        assert code == 1
        assert error_line(err).startswith("`sharpcam serve` needs sharpcam.not_here")


class TestEnhance:
    def test_png_to_png(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
        src, dst = tmp_path / "in.png", tmp_path / "out.png"
        cv2.imwrite(str(src), image)
        code, _, err = run(["enhance", src, dst, "--model", model], capsys)
        assert code == 0, err
        want = Engine(model, provider="cpu").process(image, bgr=True)
        assert np.array_equal(cv2.imread(str(dst)), want)  # PNG is lossless
        assert "wrote " in err

    def test_alpha_and_grey(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        rgba = np.zeros((20, 30, 4), np.uint8)
        rgba[..., 3] = np.arange(30, dtype=np.uint8)[None] * 8
        cv2.imwrite(str(tmp_path / "a.png"), rgba)
        code, _, _ = run(
            ["enhance", tmp_path / "a.png", tmp_path / "b.png", "--model", model], capsys
        )
        assert code == 0
        out = cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED)
        assert out.shape == (20, 30, 4) and np.array_equal(out[..., 3], rgba[..., 3])
        cv2.imwrite(str(tmp_path / "g.png"), np.full((10, 12), 128, np.uint8))
        code, _, _ = run(
            ["enhance", tmp_path / "g.png", tmp_path / "h.jpg", "--model", model], capsys
        )
        assert code == 0
        assert cv2.imread(str(tmp_path / "h.jpg")).shape == (10, 12, 3)

    @pytest.mark.parametrize(
        ("setup", "pattern"),
        [
            ("missing", r"input image .*in\.png does not exist"),
            ("not an image", r"cannot decode .*in\.png: not an image OpenCV reads"),
            ("bad suffix", r"cannot write .*out\.xyz: unknown image format '\.xyz'"),
        ],
    )
    def test_errors(
        self,
        tmp_path: Path,
        model: Path,
        capsys: pytest.CaptureFixture[str],
        setup: str,
        pattern: str,
    ) -> None:
        src, dst = tmp_path / "in.png", tmp_path / ("out.xyz" if setup == "bad suffix" else "o.png")
        if setup == "not an image":
            src.write_text("hello")
        elif setup == "bad suffix":
            cv2.imwrite(str(src), np.zeros((8, 8, 3), np.uint8))
        code, _, err = run(["enhance", src, dst, "--model", model], capsys)
        assert code == 1
        assert re.search(pattern, error_line(err))
        assert not dst.exists()

    def test_real_photo(
        self, tmp_path: Path, model: Path, photos_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        photo = sorted(photos_dir.glob("*.jpg"))[0]
        code, _, err = run(["enhance", photo, tmp_path / "sharp.png", "--model", model], capsys)
        assert code == 0, err
        assert cv2.imread(str(tmp_path / "sharp.png")).shape == cv2.imread(str(photo)).shape
