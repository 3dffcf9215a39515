"""Sinks: real PyAV encoding and atomic files; the virtual camera through a recording fake
``pyvirtualcam.Camera`` (no v4l2loopback here) and for real where it fails; the preview
with OpenCV's GUI calls faked, and for real on a virtual X display when Xvfb is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import pyvirtualcam
from helpers_media import RecordingCamera, decode_rgb, pattern_frame, psnr, video_times

from sharpcam import sinks
from sharpcam.errors import SinkError
from sharpcam.sinks import (
    SINKS,
    FileSink,
    NullSink,
    PreviewSink,
    VirtualCameraSink,
    compose_preview,
    pick_codec,
    virtual_camera_hint,
)
from sharpcam.sources import Frame

W, H = 32, 24


def frame(index: int = 0, width: int = W, height: int = H, **kw: object) -> Frame:
    return Frame(pattern_frame(index, width, height), index, 0.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def fake_vcam(monkeypatch: pytest.MonkeyPatch) -> type[RecordingCamera]:
    monkeypatch.setattr(pyvirtualcam, "Camera", RecordingCamera)
    monkeypatch.setattr(RecordingCamera, "instances", [])
    return RecordingCamera


class FakeGui:
    """OpenCV's window calls, recorded (there is no display in most test runs)."""

    def __init__(self) -> None:
        self.shown: list[np.ndarray] = []
        self.keys: list[int] = []
        self.visible = 1.0
        self.destroyed = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DISPLAY", ":fake")
        monkeypatch.setattr(cv2, "namedWindow", lambda *a, **k: None)
        monkeypatch.setattr(cv2, "imshow", lambda title, img: self.shown.append(img.copy()))
        monkeypatch.setattr(cv2, "waitKey", lambda ms=0: self.keys.pop(0) if self.keys else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: self.visible)
        monkeypatch.setattr(cv2, "destroyWindow", lambda *a: setattr(self, "destroyed", True))


@pytest.fixture
def fake_gui(monkeypatch: pytest.MonkeyPatch) -> FakeGui:
    gui = FakeGui()
    gui.install(monkeypatch)
    return gui


@pytest.fixture
def make_sink(
    tmp_path: Path, fake_vcam: type[RecordingCamera], fake_gui: FakeGui
) -> Callable[[str], sinks.Sink]:
    def make(name: str) -> sinks.Sink:
        if name == "virtualcam":
            return VirtualCameraSink(W, H, 30)
        if name == "file":
            return FileSink(tmp_path / "out.mp4", width=W, height=H, fps=Fraction(25))
        if name == "preview":
            return PreviewSink()
        if name == "null":
            return NullSink()
        raise AssertionError(f"add a factory for the new sink {name!r}")

    return make


@pytest.mark.parametrize("name", sorted(SINKS))
class TestEverySink:
    def test_sends_and_closes(
        self,
        make_sink: Callable[[str], sinks.Sink],
        name: str,
        tmp_path: Path,
        fake_vcam: type[RecordingCamera],
        fake_gui: FakeGui,
    ) -> None:
        sent = [frame(i) for i in range(3)]
        with make_sink(name) as sink:
            for f in sent:
                sink.send(f, f)
            assert not sink.stop_requested
        # What arrived where the sink delivers (the same fakes make_sink used).
        if name == "virtualcam":
            (cam,) = fake_vcam.instances
            assert cam.closed and len(cam.frames) == 3
            assert all(np.array_equal(a, f.image) for a, f in zip(cam.frames, sent, strict=True))
        elif name == "file":
            back = decode_rgb(tmp_path / "out.mp4")
            assert len(back) == 3
            # Each decoded frame is close to the one sent at its place (H.264 4:2:0 on a
            # 32x24 picture: ~28-32 dB) and closer to it than to the others.
            for i, image in enumerate(back):
                scores = [psnr(image, f.image) for f in sent]
                assert scores[i] > 25 and scores[i] == max(scores), scores
        elif name == "preview":
            assert len(fake_gui.shown) == 3 and fake_gui.destroyed
        elif name == "null":
            assert isinstance(sink, NullSink) and sink.frames == 3
        else:
            raise AssertionError(f"check what the new sink {name!r} delivers")

    @pytest.mark.parametrize(
        ("image", "error"),
        [
            (np.zeros((H, W, 3), np.float32), TypeError),
            (np.zeros((H, W), np.uint8), ValueError),
            (np.zeros((H, W, 4), np.uint8), ValueError),
        ],
    )
    def test_bad_frames(
        self, make_sink: Callable[[str], sinks.Sink], name: str, image: np.ndarray, error: type
    ) -> None:
        sink = make_sink(name)
        try:
            with pytest.raises(error, match="frame"):
                sink.send(Frame(image, 0, 0.0))
        finally:
            sink.close(complete=False)


class TestVirtualCamera:
    def test_sends_rgb_frames_and_names_the_device(
        self, fake_vcam: type[RecordingCamera], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level("INFO", logger="sharpcam.sinks")
        with VirtualCameraSink(W, H, 25, backend="v4l2loopback", device="/dev/video9") as sink:
            sink.send(frame(0))
            sink.send(frame(1, width=64, height=48))  # the camera changed mode: resized
        cam = fake_vcam.instances[0]
        assert (cam.width, cam.height, cam.fps) == (W, H, 25.0)
        assert cam.kwargs["fmt"] == pyvirtualcam.PixelFormat.RGB
        assert cam.kwargs["backend"] == "v4l2loopback"
        assert np.array_equal(cam.frames[0], frame(0).image)
        assert cam.frames[1].shape == (H, W, 3) and cam.closed
        assert "virtual camera ready: choose '/dev/video9'" in caplog.text

    def test_no_backend_here_for_real(self, capfd: pytest.CaptureFixture[str]) -> None:
        """This machine has no v4l2loopback device: pyvirtualcam's real error, explained."""
        try:
            sink = VirtualCameraSink(W, H, 25)
        except SinkError as err:
            message = str(err)
        else:
            sink.close()
            pytest.skip("this machine has a virtual camera")
        assert message.startswith("no virtual camera (")
        assert (
            "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=sharpcam" in message
        )
        assert message.endswith("or use --preview or --output FILE instead")
        assert "\n" not in message
        assert "Exception ignored" not in capfd.readouterr().err  # pyvirtualcam's __del__ noise

    def test_unknown_backend(self) -> None:
        with pytest.raises(SinkError, match="unknown virtual-camera backend 'nope'; on this"):
            VirtualCameraSink(W, H, 25, backend="nope")

    @pytest.mark.parametrize(
        ("platform", "words"),
        [("linux", "modprobe v4l2loopback"), ("win32", "OBS"), ("darwin", "OBS")],
    )
    def test_hint_per_platform(self, platform: str, words: str) -> None:
        assert words in virtual_camera_hint(platform)


class TestFileSink:
    def test_atomic_and_timed(self, tmp_path: Path) -> None:
        path = tmp_path / "out.mp4"
        tb = Fraction(1, 12800)
        sink = FileSink(path, width=96, height=64, fps=Fraction(25), time_base=tb)
        for i in range(6):
            sink.send(frame(i, 96, 64, pts=i * 512, time_base=tb))
        assert not path.exists()  # written under a temporary name until complete
        sink.close()
        assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
        assert video_times(path) == pytest.approx([i / 25 for i in range(6)])
        decoded = decode_rgb(path)
        assert all(psnr(d, frame(i, 96, 64).image) > 30 for i, d in enumerate(decoded))

    def test_incomplete_keeps_the_old_file(self, tmp_path: Path) -> None:
        path = tmp_path / "out.mp4"
        path.write_bytes(b"previous")
        with (
            pytest.raises(RuntimeError),
            FileSink(path, width=W, height=H, fps=Fraction(25)) as sink,
        ):
            sink.send(frame(0))
            raise RuntimeError("crash mid-run")
        assert path.read_bytes() == b"previous"
        assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]

    def test_frames_without_timestamps_use_the_rate(self, tmp_path: Path) -> None:
        path = tmp_path / "cam.mkv"
        with FileSink(path, width=W, height=H, fps=Fraction(30)) as sink:
            for i in range(4):
                sink.send(frame(i))
        assert video_times(path) == pytest.approx([i / 30 for i in range(4)], abs=1e-3)

    @pytest.mark.parametrize("suffix", [".y4m", ".mkv", ".webm"])
    def test_formats_and_odd_sizes(self, tmp_path: Path, suffix: str) -> None:
        if suffix == ".webm" and "libvpx-vp9" not in av.codecs_available:
            pytest.skip("no VP9 encoder in this FFmpeg")
        path = tmp_path / f"odd{suffix}"
        odd_w, odd_h = 33, 21 if suffix == ".y4m" else 24
        with FileSink(path, width=odd_w, height=odd_h, fps=Fraction(25)) as sink:
            for i in range(3):
                sink.send(frame(i, width=odd_w, height=odd_h))
        decoded = decode_rgb(path)
        assert len(decoded) == 3 and decoded[0].shape == (odd_h, odd_w, 3)

    def test_avi_header_states_the_real_rate(self, tmp_path: Path) -> None:
        path = tmp_path / "cam.avi"
        tb = Fraction(1, 12800)  # an MP4 input's time base: AVI must not take it as its rate
        with FileSink(path, width=W, height=H, fps=Fraction(25), time_base=tb) as sink:
            for i in range(5):
                sink.send(frame(i, pts=i * 512, time_base=tb))
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 25 and stream.frames == 5
        decoded = decode_rgb(path)
        assert len(decoded) == 5
        for i, d in enumerate(decoded):  # in order: each is closest to its own source frame
            scores = [psnr(d, frame(j).image) for j in range(5)]
            assert max(range(5), key=scores.__getitem__) == i and scores[i] > 24

    def test_unknown_format(self, tmp_path: Path) -> None:
        with pytest.raises(SinkError, match=r"unknown output video format '\.xyz'; name the file"):
            FileSink(tmp_path / "a.xyz", width=W, height=H, fps=Fraction(25))
        assert pick_codec(".MP4") in ("libx264", "libopenh264", "mpeg4")

    def test_missing_folder(self, tmp_path: Path) -> None:
        with pytest.raises(SinkError, match=r"folder .*missing does not exist; create it first"):
            FileSink(tmp_path / "missing" / "a.mp4", width=W, height=H, fps=Fraction(25))

    def test_folder_as_output(self, tmp_path: Path) -> None:
        folder = tmp_path / "x.mp4"
        folder.mkdir()
        with pytest.raises(SinkError, match="is a folder"):
            FileSink(folder, width=W, height=H, fps=Fraction(25))

    @pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
    def test_folder_that_takes_no_files(self) -> None:
        # /proc refuses new files even to root, unlike a chmod-ed folder.
        with pytest.raises(SinkError, match=r"cannot write /proc/a\.mp4: folder /proc does not"):
            FileSink(Path("/proc/a.mp4"), width=W, height=H, fps=Fraction(25))

    def test_read_only_folder(self, tmp_path: Path) -> None:
        if os.geteuid() != 0:
            folder = tmp_path
            folder.chmod(0o500)
        elif Path("/proc/self").is_dir():
            folder = Path("/proc/self")  # root writes anywhere, except here
        else:
            pytest.skip("running as root without /proc: no folder refuses root's files")
        try:
            with pytest.raises(
                SinkError, match=r"folder .* (is not writable|does not take new files)"
            ):
                FileSink(folder / "a.mp4", width=W, height=H, fps=Fraction(25))
            assert not (folder / "a.mp4").exists()
        finally:
            tmp_path.chmod(0o700)


class TestPreview:
    def test_split_view_pixels(self) -> None:
        original = np.full((40, 80, 3), 10, np.uint8)
        sharp = np.full((40, 80, 3), 200, np.uint8)
        view = compose_preview(original, sharp, "split")
        assert (view[-5:, :35] == 10).all()  # left: original (below the label)
        assert (view[-5:, 45:] == 200).all()  # right: sharpened
        assert (view[:, 40] == 255).all()  # the divider
        assert np.array_equal(compose_preview(original, sharp, "sharpened"), sharp)
        assert np.array_equal(compose_preview(original, sharp, "original"), original)
        with pytest.raises(ValueError, match="mode must be one of"):
            compose_preview(original, sharp, "both")
        with pytest.raises(ValueError, match="differ"):
            compose_preview(original, sharp[:20], "split")

    def test_toggle_and_quit_keys(self, fake_gui: FakeGui) -> None:
        sink = PreviewSink()
        original, sharp = frame(0), Frame(np.full((H, W, 3), 250, np.uint8), 0, 0.0)
        fake_gui.keys = [-1, ord(" "), ord("s"), ord(" "), ord("q")]
        modes = []
        for _ in range(5):
            sink.send(sharp, original)
            modes.append(sink.mode)
        assert modes == ["split", "sharpened", "original", "split", "split"]
        assert sink.stop_requested
        # shown in BGR; the second image is the sharpened frame alone
        assert np.array_equal(fake_gui.shown[2], cv2.cvtColor(sharp.image, cv2.COLOR_RGB2BGR))
        assert np.array_equal(fake_gui.shown[3], cv2.cvtColor(original.image, cv2.COLOR_RGB2BGR))
        sink.close()
        assert fake_gui.destroyed

    def test_window_closed_ends_the_run(self, fake_gui: FakeGui) -> None:
        sink = PreviewSink()
        fake_gui.visible = 0.0
        sink.send(frame(0), frame(0))
        assert sink.stop_requested

    def test_no_display(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if not sys.platform.startswith("linux"):
            pytest.skip("the DISPLAY check is for Linux")
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        with pytest.raises(SinkError, match=r"no display for --preview .* use --output FILE"):
            PreviewSink()


@pytest.fixture(scope="module")
def xvfb_display() -> Iterator[str]:
    """A virtual X display (Debian's ``xvfb``), or skip."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


PREVIEW_SCRIPT = """
import cv2, numpy as np
from sharpcam.sinks import PreviewSink
from sharpcam.sources import Frame
sink = PreviewSink()
img = np.zeros((48, 64, 3), np.uint8)
for i in range(5):
    sink.send(Frame(img + 200, i, 0.0), Frame(img, i, 0.0))
    sink.handle_key(ord(" "))
assert cv2.getWindowProperty(sink.title, cv2.WND_PROP_VISIBLE) >= 1
assert not sink.stop_requested
sink.close()
print("preview ok", sink.mode)
"""


def test_preview_for_real_on_xvfb(xvfb_display: str) -> None:
    """The real OpenCV (Qt) window on a virtual display, in a child process."""
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_LOGGING_RULES": "*=false"}
    done = subprocess.run(
        [sys.executable, "-c", PREVIEW_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "preview ok original" in done.stdout  # 5 toggles from split
