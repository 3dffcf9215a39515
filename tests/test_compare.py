"""``--compare``: the side-by-side picture and video a person looks at to see the effect.
Real ONNX Runtime (an unsharp-mask model), real PyAV encode and decode, real PNG files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_media import decode_rgb, make_clip, psnr
from helpers_models import unsharp_model

from sharpcam import cli
from sharpcam.compare import OUTLINE, ZOOM, busiest_crop, comparison_image


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsharp_model(tmp_path_factory.mktemp("m") / "unsharp.onnx")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "call.mp4"
    make_clip(path, frames=12, width=96, height=64, audio=True)
    return path


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a picture"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def below_labels(image: np.ndarray) -> np.ndarray:
    """The part of a labelled 64-pixel-high tile that no label covers."""
    return image[20:]


class TestPicture:
    def test_layout_and_crop_where_the_change_is(self) -> None:
        rng = np.random.default_rng(0)
        original = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        sharpened = original.copy()
        sharpened[40:48, 70:80] = 255 - sharpened[40:48, 70:80]  # the only change
        top, left = busiest_crop(original, sharpened, (64 // ZOOM, 96 // ZOOM))
        assert top <= 40 and top + 64 // ZOOM >= 48 and left <= 70 and left + 96 // ZOOM >= 80

        picture = comparison_image(original, sharpened)
        assert picture.shape == (128, 192, 3) and picture.dtype == np.uint8
        # top row: the two frames themselves (below the labels, away from the outline)
        assert np.array_equal(picture[20:30, :50], original[20:30, :50])
        assert np.array_equal(picture[20:30, 96:146], sharpened[20:30, :50])
        # bottom row: the same crop of each, enlarged without smoothing
        crop = sharpened[top : top + 64 // ZOOM, left : left + 96 // ZOOM]
        enlarged = cv2.resize(crop, (96, 64), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(below_labels(picture[64:, 96:]), below_labels(enlarged))

    def test_sizes_that_do_not_divide(self) -> None:
        image = np.full((37, 53, 3), 128, np.uint8)
        assert comparison_image(image, image).shape == (74, 106, 3)


class TestCommand:
    def test_output_with_picture_and_video(
        self, tmp_path: Path, model: Path, clip: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out, side = tmp_path / "sharp.mp4", tmp_path / "side.mp4"
        argv = ["--input", clip, "--output", out, "--compare", "--compare", side, "--model", model]
        code = cli.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 0, err
        png = tmp_path / "sharp.compare.png"
        assert f"wrote {png} (frame 6:" in err and f"wrote {side} (12 frames)" in err
        assert sorted(p.name for p in tmp_path.iterdir()) == [png.name, out.name, side.name]

        inputs, outputs = decode_rgb(clip), decode_rgb(out)
        picture = read_png(png)
        assert picture.shape == (128, 192, 3)
        left, right = below_labels(picture[:64, :96]), below_labels(picture[:64, 96:])
        # the left half is input frame 6 but for the crop's outline, a 24x16 frame (1/4 of
        # each side) drawn wherever the model changed the most
        outline = np.all(left == OUTLINE, axis=2)
        if outline.any():
            ys, xs = np.nonzero(np.all(picture[:64, :96] == OUTLINE, axis=2))
            assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (16, 24)
        assert psnr(left[~outline], below_labels(inputs[6])[~outline]) > 35
        # the right half is output frame 6 (lossy), with the same outline
        assert np.array_equal(np.all(right == OUTLINE, axis=2), outline)
        near = {i: psnr(right[~outline], below_labels(outputs[i])[~outline]) for i in (5, 6, 7)}
        assert near[6] > 30 and near[6] > max(near[5], near[7]), near
        # the model changed the frame, so the two halves differ
        assert psnr(picture[20:64, :96], picture[20:64, 96:]) < 45

        both = decode_rgb(side)
        assert len(both) == 12 and both[0].shape == (64, 192, 3)
        for i in (0, 11):
            assert psnr(below_labels(both[i][:, :96]), below_labels(inputs[i])) > 30
            assert psnr(below_labels(both[i][:, 96:]), below_labels(outputs[i])) > 30

    def test_picture_alone_and_max_frames(
        self, tmp_path: Path, model: Path, clip: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        png = tmp_path / "look.png"
        argv = ["--input", clip, "--compare", png, "--max-frames", 4, "--model", model]
        code = cli.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 0, err
        assert f"wrote {png} (frame 2:" in err and read_png(png).shape == (128, 192, 3)

    @pytest.mark.parametrize(
        ("extra", "code", "message"),
        [
            (["--compare"], 2, "--compare needs a FILE when there is no --output"),
            (["--output", "a.mp4", "--compare", "c.txt"], 1, "unknown output video format '.txt'"),
            (["--output", "a.mp4", "--compare", "a.mp4"], 2, "already an input or output"),
        ],
    )
    def test_bad_compare_options(
        self,
        tmp_path: Path,
        model: Path,
        clip: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        extra: list[str],
        code: int,
        message: str,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        got = cli.main(["--input", str(clip), "--model", str(model), *extra])
        err = capsys.readouterr().err
        assert got == code and message in err, err
        assert list(tmp_path.iterdir()) == []

    def test_interrupted_run_writes_none_and_says_so_once_each(
        self,
        tmp_path: Path,
        model: Path,
        clip: Path,
        capsys: pytest.CaptureFixture[str],
        ctrl_c_at_third_frame: None,
    ) -> None:
        out, side = tmp_path / "sharp.mp4", tmp_path / "side.mp4"
        argv = ["--input", clip, "--output", out, "--compare", "--compare", side, "--model", model]
        code = cli.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 130 and err.count("sharpcam: interrupted") == 1
        for path in (out, side, tmp_path / "sharp.compare.png"):
            assert err.count(f"{path} not written") == 1, err
        assert list(tmp_path.iterdir()) == []
