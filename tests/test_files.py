"""Files a run reads and writes, against the faults a user (or a crash) can bring: output
== input, links, long names, temporaries left by ``kill -9``, truncated videos, a model
that outputs NaN, images too large for one model run. Real files, real PyAV, real ONNX
Runtime; the CLI in-process through ``main(argv)``."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers_media import decode_rgb, pattern_frame
from helpers_models import IR_VERSION, OPSET, _save, unsharp_model
from onnx import TensorProto, helper, numpy_helper

from sharpcam import atomic, cli
from sharpcam.contract import INPUT_NAME, OUTPUT_NAME, default_model_path
from sharpcam.engine import Engine
from sharpcam.errors import ModelError
from sharpcam.tiles import MAX_PIXELS, image_size, spans

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsharp_model(tmp_path_factory.mktemp("m") / "unsharp.onnx")


def run(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("sharpcam: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("sharpcam: error: ")


def write_png(path: Path, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def faststart_clip(path: Path, frames: int) -> None:
    """An H.264 MP4 with its index first (``movflags=faststart``), as web videos are: cut
    short, it still opens and announces ``frames`` frames."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.codec_context.options = {"crf": "12", "preset": "ultrafast"}
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(pattern_frame(i, 96, 64), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            out.mux(video.encode(vf))
        out.mux(video.encode(None))


# -- output == input, links, names -----------------------------------------------------------


class TestEnhanceOutputIsInput:
    @pytest.mark.parametrize("how", ["same path", "other spelling", "symlink", "hardlink"])
    def test_refused_and_input_untouched(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str], how: str
    ) -> None:
        src = tmp_path / "in.png"
        write_png(src)
        before = src.read_bytes()
        dst = {
            "same path": src,
            "other spelling": tmp_path / "sub" / ".." / "in.png",
            "symlink": tmp_path / "link.png",
            "hardlink": tmp_path / "hard.png",
        }[how]
        (tmp_path / "sub").mkdir()
        if how == "symlink":
            dst.symlink_to(src)
        elif how == "hardlink":
            os.link(src, dst)
        code, err = run(["enhance", src, dst, "--model", model], capsys)
        assert code == 2
        assert re.fullmatch(
            r"OUT .* is the input file; choose another output name", error_line(err)
        )
        assert src.read_bytes() == before

    def test_video_output_through_a_link_to_the_input_is_refused(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        clip = tmp_path / "c.mp4"
        faststart_clip(clip, 4)
        (tmp_path / "link.mp4").symlink_to(clip)
        code, err = run(
            ["--input", clip, "--output", tmp_path / "link.mp4", "--model", model], capsys
        )
        assert code == 2 and "--output is the --input file" in error_line(err)

    def test_symlink_output_is_written_through(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        src, target, link = tmp_path / "in.png", tmp_path / "real" / "out.png", tmp_path / "o.png"
        write_png(src)
        target.parent.mkdir()
        target.write_bytes(b"old")
        link.symlink_to(target)
        code, err = run(["enhance", src, link, "--model", model], capsys)
        assert code == 0, err
        assert link.is_symlink() and os.readlink(link) == str(target)
        assert cv2.imread(str(target)).shape == (40, 56, 3)
        assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]

    def test_video_symlink_output_is_written_through(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        clip, target, link = tmp_path / "c.mp4", tmp_path / "t.mp4", tmp_path / "l.mp4"
        faststart_clip(clip, 4)
        link.symlink_to(target)  # dangling until the run writes the target
        code, err = run(["--input", clip, "--output", link, "--model", model], capsys)
        assert code == 0, err
        assert link.is_symlink() and len(decode_rgb(target)) == 4

    def test_a_folder_as_input_says_so(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, err = run(["enhance", tmp_path, tmp_path / "o.png", "--model", model], capsys)
        assert code == 1
        assert re.fullmatch(
            r"input .* is a folder; enhance takes one image file: "
            r"sharpcam enhance IN\.png OUT\.png",
            error_line(err),
        )


class TestTemporaryNames:
    def test_short_and_ours_whatever_the_output_name(self) -> None:
        for name in ("x" * 246 + ".png", "last.pt", "a.b.c.mp4", "noext"):
            tmp = atomic.temporary_sibling(Path("/d") / name)
            assert len(tmp.name) < 50 and tmp.name.startswith(".sharpcam-")
            assert tmp.name.endswith(".partial" + Path(name).suffix)
            assert not atomic.is_stale(tmp.name)

    def test_a_250_character_output_name_works(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        src = tmp_path / "in.png"
        write_png(src)
        long_png, long_mp4 = tmp_path / ("p" * 246 + ".png"), tmp_path / ("v" * 246 + ".mp4")
        assert run(["enhance", src, long_png, "--model", model], capsys)[0] == 0
        clip = tmp_path / "c.mp4"
        faststart_clip(clip, 3)
        assert run(["--input", clip, "--output", long_mp4, "--model", model], capsys)[0] == 0
        assert cv2.imread(str(long_png)) is not None and len(decode_rgb(long_mp4)) == 3


def _killed_while_writing(folder: Path, *names: str) -> list[Path]:
    """A real process that starts atomic writes of ``folder/name`` for each name and is
    killed with SIGKILL (so nothing can clean up); returns the temporary files it left."""
    code = (
        "import contextlib, os, signal, sys\n"
        "from sharpcam.atomic import atomic_path\n"
        "with contextlib.ExitStack() as stack:\n"
        "    for name in sys.argv[1:]:\n"
        "        tmp = stack.enter_context(atomic_path(name))\n"
        "        tmp.write_bytes(b'half a file')\n"
        "        print(tmp, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", code, *(str(folder / n) for n in names)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert proc.returncode == -signal.SIGKILL
    left = [Path(line) for line in proc.stdout.split()]
    assert len(left) == len(names) and all(p.exists() and p.parent == folder for p in left)
    return left


class TestStaleTemporaries:
    def test_left_by_kill_9_removed_by_the_next_run_with_one_line(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        stale = _killed_while_writing(tmp_path, "sharp.mp4", "out.png")
        src = tmp_path / "in.png"
        write_png(src)
        code, err = run(["enhance", src, tmp_path / "out.png", "--model", model], capsys)
        assert code == 0, err
        assert not any(p.exists() for p in stale)
        lines = [line for line in err.splitlines() if "temporary file" in line]
        assert len(lines) == 1 and "removed 2 temporary files left in" in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]

    def test_a_killed_file_run_is_cleaned_up_by_the_next(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The real thing: ``sharpcam --input --output`` killed with SIGKILL mid-run."""
        clip = tmp_path / "c.mp4"
        faststart_clip(clip, 250)
        out = tmp_path / "out" / "sharp.mp4"
        out.parent.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "sharpcam", "--input", clip, "--output", out]
        proc = subprocess.Popen(
            [str(a) for a in [*argv, "--model", model, "--no-progress", "--threads", 1]],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not list(out.parent.glob(".sharpcam-*.partial.mp4")):
                assert proc.poll() is None and time.monotonic() < deadline, "no temporary seen"
                time.sleep(0.005)
        finally:
            proc.kill()
            proc.wait()
        left = list(out.parent.iterdir())
        assert [p.name for p in left if p.name == "sharp.mp4"] == []  # never a partial output
        assert len(left) == 1 and left[0].name.startswith(".sharpcam-")
        code, err = run(["--input", clip, "--output", out, "--model", model], capsys)
        assert code == 0 and "removed 1 temporary file left in" in err
        assert [p.name for p in out.parent.iterdir()] == ["sharp.mp4"]

    def test_training_checkpoint_temporary_is_swept(self, tmp_path: Path) -> None:
        (stale,) = _killed_while_writing(tmp_path, "last.pt")
        assert stale.name.endswith(".partial.pt")
        atomic.atomic_write_text(tmp_path / "history.csv", "step\n")
        assert not stale.exists()

    def test_others_are_kept(self, tmp_path: Path) -> None:
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            mine = atomic.temporary_sibling(tmp_path / "a.mp4").name
            of_alive = re.sub(r"-\d+-", f"-{alive.pid}-", mine, count=1)
            other_host = re.sub(r"^\.sharpcam-[0-9a-f]{4}-", ".sharpcam-zzzz-", of_alive)
            keep = [".a.1234abcd.partial.mp4", "notes.txt", of_alive, other_host, mine]
            for name in keep:
                (tmp_path / name).write_text("x")
            assert atomic.remove_stale(tmp_path) == []
            assert all((tmp_path / name).exists() for name in keep)
        finally:
            alive.kill()
            alive.wait()


# -- truncated input video --------------------------------------------------------------------


class TestTruncatedVideo:
    @pytest.fixture
    def cut(self, tmp_path: Path) -> Path:
        whole = tmp_path / "whole.mp4"
        faststart_clip(whole, 60)
        data = whole.read_bytes()
        cut = tmp_path / "cut.mp4"
        cut.write_bytes(data[: len(data) // 2])
        return cut

    def test_warning_with_the_count_and_exit_1(
        self, tmp_path: Path, cut: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "sharp.mp4"
        code, err = run(["--input", cut, "--output", out, "--model", model], capsys)
        assert code == 1
        found = re.fullmatch(
            r"cut\.mp4 ended after (\d+) of 60 frames \(the file is truncated\); the outputs "
            r"hold those frames — check the input, or pass --allow-partial to accept .*",
            error_line(err),
        )
        assert found, err
        assert 0 < int(found.group(1)) < 60 and len(decode_rgb(out)) == int(found.group(1))

    def test_allow_partial_accepts_it_with_the_warning(
        self, tmp_path: Path, cut: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "sharp.mp4"
        argv = ["--input", cut, "--output", out, "--model", model, "--allow-partial"]
        code, err = run(argv, capsys)
        assert code == 0 and "sharpcam: error" not in err
        assert re.search(r"cut\.mp4 ended after \d+ of 60 frames .*--allow-partial", err)
        assert out.exists()

    def test_undecodable_tail(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        whole = tmp_path / "whole.mp4"
        faststart_clip(whole, 60)
        data = bytearray(whole.read_bytes())
        half = len(data) // 2
        data[half:] = (
            np.random.default_rng(0).integers(0, 256, len(data) - half, np.uint8).tobytes()
        )
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(bytes(data))
        code, err = run(["--input", bad, "--output", tmp_path / "o.mp4", "--model", model], capsys)
        assert code == 1
        assert re.match(
            r"bad\.mp4 ended after \d+ of 60 frames \(cannot (decode frame \d+|read past frame "
            r"\d+): .+\)",
            error_line(err),
        ), err

    def test_a_whole_file_passes_quietly(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        whole = tmp_path / "whole.mp4"
        faststart_clip(whole, 20)
        code, err = run(
            ["--input", whole, "--output", tmp_path / "o.mp4", "--model", model], capsys
        )
        assert code == 0 and "ended after" not in err


# -- a model that outputs NaN or Inf -----------------------------------------------------------


def non_finite_model(path: Path, kind: str) -> Path:
    """A contract model whose output is NaN (``sqrt(x - 0.5)``: dark pixels) or Inf
    (``x / 0``) — what a diverged training exports."""
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    inits = [numpy_helper.from_array(np.array(0.5 if kind == "nan" else 0.0, np.float32), "c")]
    if kind == "nan":
        nodes = [
            helper.make_node("Sub", [INPUT_NAME, "c"], ["d"]),
            helper.make_node("Sqrt", ["d"], [OUTPUT_NAME]),
        ]
    else:
        nodes = [helper.make_node("Div", [INPUT_NAME, "c"], [OUTPUT_NAME])]
    graph = helper.make_graph(nodes, kind, [x], [y], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    return _save(model, path)


class TestNonFiniteModel:
    @pytest.mark.parametrize("kind", ["nan", "inf"])
    @pytest.mark.parametrize("io", ["graph", "host"])
    def test_engine_raises_naming_the_model(self, tmp_path: Path, kind: str, io: str) -> None:
        path = non_finite_model(tmp_path / f"{kind}.onnx", kind)
        engine = Engine(path, provider="cpu", io=io)
        frame = np.full((30, 41, 3), 200, np.uint8)
        frame[10, 20] = 3  # one dark pixel is enough for sqrt(x - 0.5)
        with pytest.raises(ModelError, match=rf"model .*{kind}\.onnx output NaN or Inf on frame 1"):
            engine.process(frame)

    def test_file_run_stops_with_one_line_and_writes_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = non_finite_model(tmp_path / "nan.onnx", "nan")
        clip, out = tmp_path / "c.mp4", tmp_path / "o.mp4"
        faststart_clip(clip, 8)
        code, err = run(["--input", clip, "--output", out, "--model", path], capsys)
        assert code == 1
        assert re.fullmatch(
            r"model .*nan\.onnx output NaN or Inf on frame 1 \(96x64\); the model is broken: "
            r"re-export it or pass another --model",
            error_line(err),
        )
        assert not out.exists()


# -- images too large for one run ---------------------------------------------------------------


def _scene(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.putText(image, "tiles 0123", (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 3, (255,) * 3, 6)
    return image


class TestTiles:
    def test_spans_cover_once_and_stay_aligned(self) -> None:
        for size in (1, 7, 128, 129, 1000, 4099):
            parts = spans(size, 256, 32)
            kept = [i for *_, k0, k1 in parts for i in range(k0, k1)]
            assert kept == list(range(size))
            assert all(
                s % 8 == 0 and e - s <= 256 and s <= k0 and k1 <= e for s, e, k0, k1 in parts
            )

    def test_tiled_equals_untiled_with_the_shipped_model(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        shipped = default_model_path()
        src = tmp_path / "mid.png"
        cv2.imwrite(str(src), _scene(600, 904))
        outs = {}
        for tile in (0, 256):
            outs[tile] = tmp_path / f"t{tile}.png"
            code, err = run(
                ["enhance", src, outs[tile], "--model", shipped, "--tile", tile, "--threads", 2],
                capsys,
            )
            assert code == 0, err
            assert ("1 tile)" in err) == (tile == 0) and ("20 tiles)" in err) == (tile == 256)
        whole, tiled = (cv2.imread(str(outs[t])).astype(np.int16) for t in (0, 256))
        assert np.abs(whole - tiled).max() <= 1  # within 1/255

    @pytest.mark.parametrize("suffix", [".png", ".jpg"])
    def test_size_read_from_the_header(self, tmp_path: Path, suffix: str) -> None:
        path = tmp_path / f"i{suffix}"
        assert cv2.imwrite(str(path), np.zeros((37, 91, 3), np.uint8))
        assert image_size(path.read_bytes()[:4096]) == (91, 37)
        assert image_size(b"GIF89a" + bytes(20)) is None

    def test_tile_option_checked(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        src = tmp_path / "in.png"
        write_png(src)
        code, err = run(
            ["enhance", src, tmp_path / "o.png", "--tile", 100, "--model", model], capsys
        )
        assert code == 2 and "--tile must be 0 (no tiles) or at least 128" in error_line(err)

    def test_absurd_size_refused_before_decoding(
        self, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # A real 1-bit grey PNG of 20000 x 12000 (240 megapixels), streamed: 30 MB raw.
        width, height = 20_000, 12_000
        assert width * height > MAX_PIXELS
        row = b"\0" + b"\xaa" * (width // 8)
        pack = zlib.compressobj(1)
        body = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()

        def chunk(kind: bytes, data: bytes) -> bytes:
            crc = zlib.crc32(kind + data)
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
        big = tmp_path / "big.png"
        big.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", body)
            + chunk(b"IEND", b"")
        )
        code, err = run(["enhance", big, tmp_path / "o.png", "--model", model], capsys)
        assert code == 1
        assert re.fullmatch(
            r".*big\.png is 20000x12000 \(240 megapixels\); enhance takes at most 200 "
            r"megapixels — scale it down first",
            error_line(err),
        )
