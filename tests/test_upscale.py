"""×2 models through the runtime: the engine on odd sizes (every backend and I/O path), the
file, camera and ``enhance`` commands, a mismatched scale, and tiers found by metadata.

The ×2 model is real and made here (:func:`helpers_models.nearest_x2_model`: a fixed 1x1
convolution and a pixel shuffle), so the expected output is known exactly: each input
pixel becomes a 2x2 block."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import pyvirtualcam
from helpers_media import FakeCapture, RecordingCamera, decode_rgb, make_clip
from helpers_models import nearest_x2, nearest_x2_model, set_metadata, unsharp_model

from sharpcam import cli
from sharpcam.backends import openvino as ov_backend
from sharpcam.engine import Engine
from sharpcam.errors import ModelError
from sharpcam.models import find_models, read_info, scale_problem
from sharpcam.runtime import EngineSettings, open_engine, resolve_models

HAS_OPENVINO = ov_backend.available()


@pytest.fixture(scope="module")
def x2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nearest_x2_model(tmp_path_factory.mktemp("m") / "sharpcam-x2.onnx")


@pytest.fixture(scope="module")
def x1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsharp_model(tmp_path_factory.mktemp("m1") / "sharpcam.onnx")


def run(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("sharpcam: error: ")]


ENGINES = [
    pytest.param({"io": "host"}, id="onnxruntime-host"),
    pytest.param({"io": "graph"}, id="onnxruntime-graph"),
    pytest.param(
        {"backend": "openvino"},
        id="openvino",
        marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed"),
    ),
]


class TestEngine:
    @pytest.mark.parametrize("options", ENGINES)
    @pytest.mark.parametrize("size", [(37, 53), (1, 1), (8, 16), (45, 9)])
    def test_odd_sizes_upscale_exactly(
        self, x2: Path, options: dict[str, str], size: tuple[int, int]
    ) -> None:
        image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
        engine = Engine(x2, provider="cpu", upscale=2, **options)
        assert engine.scale == 2 and engine.info.mode == "x2"
        out = engine.process(image)
        assert out.shape == (size[0] * 2, size[1] * 2, 3)
        assert np.array_equal(out, nearest_x2(image))
        bgr = engine.process(image[..., ::-1].copy(), bgr=True)
        assert np.array_equal(bgr[..., ::-1], out)

    def test_size_change_replans(self, x2: Path) -> None:
        engine = Engine(x2, provider="cpu")
        for h, w in ((20, 30), (11, 7), (20, 30)):
            assert engine.process(np.zeros((h, w, 3), np.uint8)).shape == (2 * h, 2 * w, 3)

    def test_upscale_mismatch_is_one_line(self, x1: Path, x2: Path) -> None:
        with pytest.raises(ModelError) as info:
            Engine(x1, provider="cpu", upscale=2)
        assert str(info.value) == (
            f"{x1} is a ×1 (restore) model but --upscale 2 was asked: pass a matching --model "
            "or drop --upscale"
        )
        with pytest.raises(ModelError, match=r"is a ×2 \(x2\) model but --upscale 1 .*add --up"):
            Engine(x2, provider="cpu", upscale=1)

    def test_x2_graph_with_x1_metadata_fails_at_run_time(self, tmp_path: Path) -> None:
        path = nearest_x2_model(tmp_path / "liar.onnx", metadata=False)  # says nothing: scale 1
        engine = Engine(path, provider="cpu")
        with pytest.raises(ModelError, match=r"its output is 16x16 for a 8x8 input; the contr"):
            engine.process(np.zeros((8, 8, 3), np.uint8))


class TestCommands:
    def test_file_upscaled_to_twice_the_size(
        self, tmp_path: Path, x2: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        clip, out = tmp_path / "in.mp4", tmp_path / "out.mkv"
        make_clip(clip, frames=6, width=50, height=38)  # odd multiples of 8 on both axes
        argv = ["--input", clip, "--output", out, "--model", x2, "--upscale", "2"]
        code, err = run([*argv, "--no-progress"], capsys)
        assert code == 0, err
        frames = decode_rgb(out)
        assert len(frames) == 6 and frames[0].shape == (76, 100, 3)
        source = decode_rgb(clip)[0]
        # Lossy codec on both sides: the upscaled frame is close to the source's blocks.
        assert np.abs(frames[0].astype(int) - nearest_x2(source)).mean() < 6

    def test_camera_to_virtual_camera_at_twice_the_size(
        self,
        x2: Path,
        fake_camera: type[FakeCapture],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setattr(pyvirtualcam, "Camera", RecordingCamera)
        monkeypatch.setattr(RecordingCamera, "instances", [])
        argv = ["--device", "0", "--model", x2, "--upscale", "2", "--max-frames", "3"]
        code, err = run(argv, capsys)
        assert code == 0, err
        cam = RecordingCamera.instances[0]
        assert (cam.width, cam.height) == (128, 96) and len(cam.frames) == 3

    def test_enhance_odd_size(
        self, tmp_path: Path, x2: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        image = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
        src, dst = tmp_path / "in.png", tmp_path / "out.png"
        cv2.imwrite(str(src), image)
        code, err = run(["enhance", src, dst, "--model", x2, "--upscale", "2"], capsys)
        assert code == 0, err
        assert np.array_equal(cv2.imread(str(dst)), nearest_x2(image))

    @pytest.mark.parametrize("command", ["run", "enhance"])
    def test_mismatched_scale_one_line(
        self, tmp_path: Path, x1: Path, x2: Path, command: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        models = tmp_path / "models"
        models.mkdir()
        (models / x2.name).write_bytes(x2.read_bytes())
        src = tmp_path / "in.png"
        cv2.imwrite(str(src), np.zeros((8, 8, 3), np.uint8))
        clip = tmp_path / "in.mp4"
        make_clip(clip, frames=2, width=32, height=24)
        argv = (
            ["enhance", src, tmp_path / "o.png"]
            if command == "enhance"
            else ["--input", clip, "--output", tmp_path / "o.mp4"]
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SHARPCAM_MODELS", str(models))
            code, err = run([*argv, "--model", x1, "--upscale", "2"], capsys)
        assert code == 1
        assert error_lines(err) == [
            f"sharpcam: error: {x1} is a ×1 (restore) model but --upscale 2 was asked: "
            f"use --model {models / x2.name} or drop --upscale"
        ]
        assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.mp4").exists()

    @pytest.mark.parametrize(
        ("flag", "mode", "words"),
        [("--upscale", "x2", "×2 (x2)"), ("--deblock", "deblock", "×1 (deblock)")],
    )
    def test_no_model_of_the_asked_mode(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        flag: str,
        mode: str,
        words: str,
    ) -> None:
        monkeypatch.setenv("SHARPCAM_MODELS", str(tmp_path))
        src = tmp_path / "in.png"
        cv2.imwrite(str(src), np.zeros((8, 8, 3), np.uint8))
        asked = [flag, "2"] if flag == "--upscale" else [flag]
        code, err = run(["enhance", src, tmp_path / "o.png", *asked], capsys)
        assert code == 1
        kind = "×2" if mode == "x2" else mode
        assert error_lines(err) == [
            f"sharpcam: error: no {words} model in {tmp_path} (none has sharpcam.mode={mode} in "
            f"its metadata); pass --model PATH of a {kind} model, or drop {flag}"
        ]


class TestTiersFromMetadata:
    @pytest.fixture
    def models(self, tmp_path: Path) -> Path:
        folder = tmp_path / "models"
        folder.mkdir()
        unsharp_model(folder / "sharpcam.onnx")  # no metadata: restore, quality
        set_metadata(unsharp_model(folder / "sharpcam-fast.onnx", 0.2), tier="fast", scale="1")
        set_metadata(nearest_x2_model(folder / "sharpcam-x2-fast.onnx"), tier="fast")
        nearest_x2_model(folder / "sharpcam-x2.onnx")
        (folder / "notes.onnx").write_bytes(b"not a model")  # skipped, not fatal
        return folder

    def test_found_by_mode_and_tier(self, models: Path) -> None:
        restore = find_models(models, mode="restore")
        assert list(restore) == ["quality", "fast"]
        assert restore["fast"].path.name == "sharpcam-fast.onnx"
        x2 = find_models(models, mode="x2")
        assert {t: i.path.name for t, i in x2.items()} == {
            "quality": "sharpcam-x2.onnx",
            "fast": "sharpcam-x2-fast.onnx",
        }
        assert read_info(models / "sharpcam-x2.onnx").macs_per_pixel == 3.0

    def test_asked_tier_and_missing_tier(self, models: Path) -> None:
        settings = EngineSettings(tier="fast", upscale=2, models=models)
        assert [i.path.name for i in resolve_models(settings).values()] == ["sharpcam-x2-fast.onnx"]
        with pytest.raises(ModelError, match=r"no balanced tier among the restore models in .*"):
            resolve_models(EngineSettings(tier="balanced", models=models))

    def test_auto_logs_one_line(
        self, models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = EngineSettings(upscale=2, models=models, cache=tmp_path / "cache")
        with caplog.at_level(logging.INFO, logger="sharpcam"):
            engine = open_engine(settings, width=40, height=30, fps=30, live=True)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tier: ")]
        assert len(lines) == 1 and engine.scale == 2
        assert engine.tier in lines[0]
        assert engine.process(np.zeros((30, 40, 3), np.uint8)).shape == (60, 80, 3)
        assert (tmp_path / "cache" / "probes.json").is_file()

    def test_scale_problem_words(self, models: Path) -> None:
        info = read_info(models / "sharpcam-x2.onnx")
        assert scale_problem(info, 2) is None
        assert "add --upscale 2" in str(scale_problem(info, 1))


class TestDeblockMode:
    """``--deblock``: the ``deblock`` models (full-size decoded call video) instead of
    ``restore``, found by metadata like every tier, refused beside ``--upscale 2``."""

    @pytest.fixture
    def models(self, tmp_path: Path) -> Path:
        folder = tmp_path / "models"
        folder.mkdir()
        unsharp_model(folder / "sharpcam.onnx")  # no metadata: restore, quality
        set_metadata(unsharp_model(folder / "sharpcam-deblock.onnx", -0.3), mode="deblock")
        return folder

    def test_deblock_finds_only_the_deblock_model(self, models: Path) -> None:
        assert [i.path.name for i in resolve_models(EngineSettings(models=models)).values()] == [
            "sharpcam.onnx"
        ]
        found = resolve_models(EngineSettings(models=models, deblock=True))
        assert [(i.path.name, i.mode, i.scale) for i in found.values()] == [
            ("sharpcam-deblock.onnx", "deblock", 1)
        ]

    def test_file_runs_through_the_deblock_model(
        self, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        image = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        src = tmp_path / "in.png"
        cv2.imwrite(str(src), image)
        outs = {}
        for name, flags in (("restore", []), ("deblock", ["--deblock"])):
            dst = tmp_path / f"{name}.png"
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SHARPCAM_MODELS", str(models))
                code, err = run(["enhance", src, dst, "--tier", "quality", *flags], capsys)
            assert code == 0, err
            outs[name] = cv2.imread(str(dst))

        def detail(img: np.ndarray) -> float:  # high-frequency energy
            return float(np.abs(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F)).mean())

        # the restore model sharpens (amount +0.5), the deblock one smooths (-0.3)
        assert detail(outs["deblock"]) < 0.9 * detail(image) < detail(outs["restore"])

    def test_deblock_and_upscale_contradict(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        src = tmp_path / "in.png"
        cv2.imwrite(str(src), np.zeros((8, 8, 3), np.uint8))
        code, err = run(["enhance", src, tmp_path / "o.png", "--deblock", "--upscale", "2"], capsys)
        assert code != 0
        lines = error_lines(err)
        assert len(lines) == 1 and "--deblock works on the full-size stream" in lines[0]
        assert not (tmp_path / "o.png").exists()
