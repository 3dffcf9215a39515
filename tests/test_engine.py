"""The engine with real ONNX Runtime on small self-made contract models."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers_models import (
    broken_model,
    halving_model,
    torch_model,
    unsharp_model,
    unsharp_reference,
)
from onnx import TensorProto

from sharpcam import engine as engine_mod
from sharpcam.contract import contract_problem
from sharpcam.engine import Engine, cache_dir, skip_reason
from sharpcam.errors import ModelError, ProviderError
from sharpcam.frames import PlanarBuffers, padded_size

ODD_SIZES = [(1, 1), (5, 3), (37, 53), (404, 720), (768, 1366)]  # (H, W)


@pytest.fixture(scope="module")
def unsharp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsharp_model(tmp_path_factory.mktemp("models") / "unsharp.onnx")


@pytest.fixture(scope="module")
def torch_pair(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    return torch_model(path), path


@pytest.fixture(scope="module", params=["host", "graph"])
def cpu_engine(unsharp: Path, request: pytest.FixtureRequest) -> Engine:
    """The CPU engine with each place of conversion: OpenCV on the host, or in the graph."""
    return Engine(unsharp, provider="cpu", io=request.param)


@pytest.fixture(scope="module")
def host_engine(unsharp: Path) -> Engine:
    return Engine(unsharp, provider="cpu", io="host")


def rand_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reflect_pad(frame: np.ndarray) -> np.ndarray:
    """Reference padding: ``[1,3,H',W']`` float32, numpy's reflect (as OpenCV's 101)."""
    h, w = frame.shape[:2]
    ph, pw = padded_size(h, w)
    x = frame.transpose(2, 0, 1)[None].astype(np.float32) / 255
    out = x
    # numpy's reflect needs pad < size; pad repeatedly for tiny frames
    while out.shape[2] < ph or out.shape[3] < pw:
        dh = min(ph - out.shape[2], max(out.shape[2] - 1, 0))
        dw = min(pw - out.shape[3], max(out.shape[3] - 1, 0))
        if dh == 0 and dw == 0:  # a 1-pixel axis: reflection is that pixel
            mode_pad = ((0, 0), (0, 0), (0, ph - out.shape[2]), (0, pw - out.shape[3]))
            return np.pad(out, mode_pad, mode="edge")
        out = np.pad(out, ((0, 0), (0, 0), (0, dh), (0, dw)), mode="reflect")
    return out


def to_uint8(x: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.rint(np.clip(x[0, :, :h, :w], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


class TestParity:
    """Engine output equals the model run by another implementation on the same input."""

    @pytest.mark.parametrize("io", ["host", "graph"])
    @pytest.mark.parametrize(("h", "w"), ODD_SIZES)
    def test_equals_pytorch(self, torch_pair, h: int, w: int, io: str) -> None:
        import torch

        module, path = torch_pair
        frame = rand_frame(h, w, seed=h * w)
        got = Engine(path, provider="cpu", io=io).process(frame)
        with torch.inference_mode():
            expected = module(torch.from_numpy(reflect_pad(frame))).numpy()
        want = to_uint8(expected, h, w)
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        # float differences may move a value across a rounding boundary: at most 1 level
        assert np.abs(got.astype(int) - want).max() <= 1
        assert np.mean(got != want) < 0.01

    @pytest.mark.parametrize(("h", "w"), ODD_SIZES)
    def test_equals_numpy_unsharp(self, cpu_engine: Engine, h: int, w: int) -> None:
        frame = rand_frame(h, w, seed=1)
        want = to_uint8(unsharp_reference(reflect_pad(frame)), h, w)
        got = cpu_engine.process(frame)
        assert np.abs(got.astype(int) - want).max() <= 1

    def test_really_sharpens(self, cpu_engine: Engine) -> None:
        frame = np.full((32, 32, 3), 100, np.uint8)
        frame[:, 16:] = 150
        out = cpu_engine.process(frame)
        assert out[5, 15, 0] < 100 and out[5, 16, 0] > 150  # overshoot on both sides
        # flat areas untouched (away from the frame border, where the Conv pads with zeros)
        assert np.array_equal(out[1:-1, 2:10], frame[1:-1, 2:10])

    def test_size_change_mid_stream_replans(self, cpu_engine: Engine) -> None:
        for h, w in [(404, 720), (768, 1366), (404, 720), (48, 64)]:
            frame = rand_frame(h, w, seed=w)
            want = to_uint8(unsharp_reference(reflect_pad(frame)), h, w)
            assert np.abs(cpu_engine.process(frame).astype(int) - want).max() <= 1

    def test_bgr_in_bgr_out(self, cpu_engine: Engine) -> None:
        rgb = rand_frame(30, 50, seed=3)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        assert np.array_equal(
            cpu_engine.process(bgr, bgr=True)[:, :, ::-1], cpu_engine.process(rgb)
        )

    def test_out_buffer_and_non_contiguous_input(self, cpu_engine: Engine) -> None:
        big = rand_frame(40, 60, seed=4)
        view = big[::2, ::2]  # not contiguous
        out = np.empty((20, 30, 3), np.uint8)
        result = cpu_engine.process(view, out=out)
        assert result is out
        assert np.array_equal(out, cpu_engine.process(np.ascontiguousarray(view)))

    def test_input_untouched_and_result_is_new(self, cpu_engine: Engine) -> None:
        frame = rand_frame(24, 24)
        keep = frame.copy()
        a = cpu_engine.process(frame)
        a_copy = a.copy()
        b = cpu_engine.process(frame)
        assert np.array_equal(frame, keep) and a is not b and np.array_equal(a, b)
        # The caller owns each result: a later frame never writes into an earlier one
        # (24x24 needs no padding, so a crop of the engine's buffer would be the buffer).
        cpu_engine.process(rand_frame(24, 24, seed=9))
        assert np.array_equal(a, a_copy) and not np.shares_memory(a, b)

    def test_timings_and_count(self, unsharp: Path) -> None:
        engine = Engine(unsharp, provider="cpu")
        engine.process(rand_frame(16, 16))
        assert engine.frames == 1 and engine.last_ms > 0 and engine.last_host_ms > 0

    def test_one_thread_per_caller_is_safe(self, cpu_engine: Engine) -> None:
        frames = {size: rand_frame(*size, seed=size[0]) for size in [(33, 47), (64, 80)]}
        want = {size: cpu_engine.process(f) for size, f in frames.items()}
        bad: list[tuple[int, int]] = []

        def work(size: tuple[int, int]) -> None:
            for _ in range(15):
                if not np.array_equal(cpu_engine.process(frames[size]), want[size]):
                    bad.append(size)

        threads = [threading.Thread(target=work, args=(s,)) for s in frames]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bad == []


@pytest.fixture(scope="module")
def graph_engine(unsharp: Path) -> Engine:
    engine = Engine(unsharp, provider="cpu", io="graph")
    assert engine.io == "graph"
    return engine


class TestGraphIO:
    """The uint8 NHWC in-graph conversion (the default on CUDA and CPU), on the CPU provider: it
    must give the host path's frames, within one grey level of rounding."""

    @pytest.mark.parametrize(("h", "w"), ODD_SIZES)
    def test_equals_host_conversion(
        self, graph_engine: Engine, host_engine: Engine, h: int, w: int
    ) -> None:
        frame = rand_frame(h, w, seed=h + w)
        got = graph_engine.process(frame).astype(int)
        assert got.shape == frame.shape
        assert np.abs(got - host_engine.process(frame).astype(int)).max() <= 1

    def test_bgr_and_out_buffer(self, graph_engine: Engine, host_engine: Engine) -> None:
        frame = rand_frame(36, 52, seed=3)
        out = np.empty_like(frame)
        result = graph_engine.process(frame, bgr=True, out=out)
        assert result is out
        expected = host_engine.process(frame, bgr=True).astype(int)
        assert np.abs(out.astype(int) - expected).max() <= 1

    def test_auto_converts_in_the_graph_on_cpu(self, unsharp: Path, host_engine: Engine) -> None:
        # a tie with the host path on the CPU (sharpcam bench --io-compare), one path with CUDA
        assert Engine(unsharp, provider="cpu").io == "graph"
        assert host_engine.io == "host"

    def test_unknown_io(self, unsharp: Path) -> None:
        with pytest.raises(ValueError, match="io must be one of"):
            Engine(unsharp, provider="cpu", io="gpu")


class TestBadFrames:
    @pytest.mark.parametrize(
        ("frame", "error"),
        [
            (np.zeros((8, 8, 3), np.float32), TypeError),
            ([[0, 0, 0]], TypeError),
            (np.zeros((8, 8), np.uint8), ValueError),
            (np.zeros((8, 8, 4), np.uint8), ValueError),
            (np.zeros((0, 8, 3), np.uint8), ValueError),
        ],
    )
    def test_rejected_with_type(self, cpu_engine: Engine, frame: object, error: type) -> None:
        with pytest.raises(error, match="frame"):
            cpu_engine.process(frame)  # type: ignore[arg-type]


class TestPlanarBuffers:
    def test_round_trip_is_exact(self) -> None:
        frame = rand_frame(13, 21)
        buffers = PlanarBuffers(13, 21)
        buffers.output[...] = buffers.load(frame)
        assert np.array_equal(buffers.unload(), frame)
        assert buffers.input.shape == (1, 3, 16, 24)

    def test_negative_and_large_outputs_saturate(self) -> None:
        buffers = PlanarBuffers(2, 2)
        buffers.output[...] = -0.7
        buffers.output[0, 1] = 3.0
        out = buffers.unload()
        assert (out[..., 0] == 0).all() and (out[..., 1] == 255).all() and (out[..., 2] == 0).all()


class TestProviders:
    def test_auto_says_why_each_provider_above_was_skipped(
        self, unsharp: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """The real selection on this machine, whatever it lands on (CPU here: onnxruntime-
        gpu without CUDA libraries; CUDA where TensorRT's libraries are missing...): one
        line naming the provider in use and, for each one above it that this build has, the
        reason it was skipped."""
        with caplog.at_level(logging.INFO, logger="sharpcam.engine"):
            engine = Engine(unsharp)
        lines = [r.getMessage() for r in caplog.records if r.name == "sharpcam.engine"]
        assert len(lines) == 1 and lines[0].startswith(f"provider: {engine.provider}")
        order = list(engine_mod.PROVIDERS)
        for name in order[: order.index(engine.provider)]:
            if engine_mod.PROVIDERS[name] in ort.get_available_providers():
                reason = engine.skipped[name]
                assert reason and "\n" not in reason and len(reason) <= 160
        assert engine.provider not in engine.skipped
        if engine.provider == "cpu" and not engine_mod.gpu_present():
            assert lines == ["provider: cpu (no CUDA GPU)"]  # a laptop: no library names
        out, err = capfd.readouterr()
        assert "EP Error" not in out and "onnxruntime" not in err  # the loud output is caught

    def test_verbose_names_what_is_missing(
        self, unsharp: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.DEBUG, logger="sharpcam.engine"):
            engine = Engine(unsharp)
        if not engine.skipped:
            pytest.skip(f"no provider was skipped here ({engine.provider})")
        details = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        line = next(m for m in details if m.startswith("providers skipped: "))
        for name, reason in engine.skipped.items():
            assert f"{name}: {reason}" in line

    def test_short_note(self) -> None:
        missing = {"tensorrt": "needs libnvinfer.so.10, not found", "cuda": "CUDA failure 2: oom"}
        assert engine_mod.short_skip_note({}, gpu=False) == ""
        assert engine_mod.short_skip_note(missing, gpu=False) == "no CUDA GPU"
        assert engine_mod.short_skip_note(missing, gpu=True) == (
            "tensorrt: libraries not found, -v names them; cuda: CUDA failure 2: oom"
        )

    def test_auto_without_gpu_build(self, unsharp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
        engine = Engine(unsharp)
        assert engine.provider == "cpu"
        assert engine.skipped == {
            "tensorrt": "not in this onnxruntime build (needs onnxruntime-gpu)",
            "cuda": "not in this onnxruntime build (needs onnxruntime-gpu)",
        }

    @pytest.mark.parametrize("name", ["cuda", "tensorrt"])
    def test_explicit_gpu_provider_missing_is_an_error(
        self, unsharp: Path, monkeypatch: pytest.MonkeyPatch, name: str
    ) -> None:
        monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
        with pytest.raises(
            ProviderError, match=f"provider '{name}' cannot run here.*--provider cpu"
        ):
            Engine(unsharp, provider=name)

    def test_explicit_cuda_here_for_real(self, unsharp: Path) -> None:
        try:
            engine = Engine(unsharp, provider="cuda")
        except ProviderError as err:
            assert "\n" not in str(err) and "cuda" in str(err)
        else:
            assert engine.provider == "cuda"

    def test_unknown_provider(self, unsharp: Path) -> None:
        with pytest.raises(ProviderError, match="unknown provider 'gpu'; choose one of auto"):
            Engine(unsharp, provider="gpu")

    def test_cpu_uses_all_cores(self, unsharp: Path) -> None:
        engine = Engine(unsharp, provider="cpu")
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        assert engine.session.get_session_options().intra_op_num_threads == cores
        assert (
            Engine(unsharp, provider="cpu", threads=1)
            .session.get_session_options()
            .intra_op_num_threads
            == 1
        )

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            (
                "\x1b[1;31m2026 [E:onnxruntime:Default, provider_bridge_ort.cc:2430 operator()] "
                "Failed to load library libonnxruntime_providers_tensorrt.so with error: "
                "libcublas.so.13: cannot open shared object file: No such file or directory\x1b[m",
                "needs libcublas.so.13, not found",
            ),
            (
                "[W:onnxruntime:Default, x.cc:1] Failed to create CUDAExecutionProvider. "
                "Require cuDNN 9.* and CUDA 13.*. Please install all dependencies",
                "Require cuDNN 9.* and CUDA 13.*",
            ),
            ("CUDA failure 100: no CUDA-capable device is detected ; GPU=0", "CUDA failure 100:"),
            ("", "not usable (no reason given)"),
        ],
    )
    def test_skip_reason(self, text: str, reason: str) -> None:
        assert skip_reason(text).startswith(reason)

    def test_cache_dir(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("SHARPCAM_CACHE", str(tmp_path / "a"))
        assert cache_dir() == tmp_path / "a"
        monkeypatch.delenv("SHARPCAM_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
        assert cache_dir() == tmp_path / "x" / "sharpcam"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert cache_dir() == Path.home() / ".cache" / "sharpcam"


class TestModelErrors:
    def test_missing_named(self, tmp_path: Path) -> None:
        with pytest.raises(
            ModelError, match=r"model file .*nope\.onnx does not exist; pass another"
        ):
            Engine(tmp_path / "nope.onnx")

    def test_missing_default_says_how_to_make_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SHARPCAM_MODEL", str(tmp_path / "sharpcam.onnx"))
        with pytest.raises(ModelError, match=r"--model PATH, or make one with `python -m training"):
            Engine()

    def test_default_model_path_is_used(
        self, unsharp: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SHARPCAM_MODEL", str(unsharp))
        engine = Engine(provider="cpu")
        assert engine.model_path == unsharp
        assert engine.metadata["made_by"] == "tests/helpers_models.py"

    @pytest.mark.parametrize(
        ("content", "match"),
        [
            (b"", "is empty"),
            (b"\x08\x07garbage that is not protobuf" * 10, "corrupt or not an ONNX model"),
        ],
    )
    def test_corrupt(self, tmp_path: Path, content: bytes, match: str) -> None:
        path = tmp_path / "bad.onnx"
        path.write_bytes(content)
        with pytest.raises(ModelError, match=match) as info:
            Engine(path)
        assert "\n" not in str(info.value)

    def test_folder(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="is not a file"):
            Engine(tmp_path)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"input_name": "x"}, "input 'x' should be named 'frames'"),
            ({"output_name": "y"}, "output 'y' should be named 'sharpened'"),
            ({"channels": 1}, "input 'frames' has 1 channels on axis 1, the contract needs 3"),
            (
                {"elem_type": TensorProto.DOUBLE},
                r"input 'frames' is tensor\(double\), the contract",
            ),
            ({"size": (256, 256)}, "input 'frames' has a fixed size 256x256; the contract needs"),
        ],
    )
    def test_wrong_contract(self, tmp_path: Path, kwargs: dict, match: str) -> None:
        path = broken_model(tmp_path / "broken.onnx", **kwargs)
        with pytest.raises(ModelError, match="does not follow the sharpcam contract: " + match):
            Engine(path, provider="cpu")


@pytest.mark.parametrize("io", ["host", "graph"])
def test_model_failing_at_run_time(tmp_path: Path, io: str) -> None:
    engine = Engine(halving_model(tmp_path / "half.onnx"), provider="cpu", io=io)
    match = r"half\.onnx failed on a 64x48 frame: its output is 32x24 for a 64x48 input; the"
    with pytest.raises(ModelError, match=match) as info:
        engine.process(np.zeros((48, 64, 3), np.uint8))
    assert "\n" not in str(info.value)


def test_contract_problem_accepts_the_contract() -> None:
    class Info:
        def __init__(self, name: str) -> None:
            self.name, self.type, self.shape = name, "tensor(float)", ["N", 3, "H", "W"]

    assert contract_problem([Info("frames")], [Info("sharpened")]) is None
    assert "1 input" in str(contract_problem([], [Info("sharpened")]))
