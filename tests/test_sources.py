"""Sources: real PyAV decoding of self-made clips; the webcam through a fake VideoCapture
(the code around it, OpenCV's colour conversion included, is real)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_media import FakeCapture, make_clip, pattern_frame, psnr

from sharpcam import sources
from sharpcam.errors import SourceError, UsageError
from sharpcam.sources import CameraSource, FileSource, SourceLost, list_cameras, open_source


@pytest.fixture
def fake_camera(
    fake_camera: type[FakeCapture], monkeypatch: pytest.MonkeyPatch
) -> type[FakeCapture]:
    """The shared fake camera, delivering frames with no delay."""
    monkeypatch.setattr(fake_camera, "INTERVAL", 0.0)
    return fake_camera


class TestFileSource:
    def test_reads_every_frame_with_timestamps(self, tmp_path: Path) -> None:
        clip = tmp_path / "clip.mp4"
        images = make_clip(clip, frames=15, width=96, height=64)
        with FileSource(clip) as src:
            info = src.info
            frames = []
            while (frame := src.read()) is not None:
                frames.append(frame)
        assert (info.width, info.height, info.fps, info.live) == (96, 64, 25, False)
        assert info.frames == 15 and info.audio == ()
        assert [f.index for f in frames] == list(range(15))
        assert [float(f.pts * f.time_base) for f in frames] == pytest.approx(
            [i / 25 for i in range(15)]
        )
        for frame, image in zip(frames, images, strict=True):
            assert frame.image.shape == (64, 96, 3) and frame.image.dtype == np.uint8
            assert frame.image.flags.c_contiguous
            assert psnr(frame.image, image) > 30  # H.264 at crf 12, 4:2:0

    def test_audio_packets_are_handed_over(self, tmp_path: Path) -> None:
        clip = tmp_path / "talk.mp4"
        make_clip(clip, frames=10, audio=True)
        with FileSource(clip) as src:
            assert len(src.info.audio) == 1
            packets = []
            while src.read() is not None:
                packets += src.take_packets()
            packets += src.take_packets()
            # (checked while the file is open: PyAV packets must not outlive their container)
            assert packets and all(p.stream.type == "audio" and p.size for p in packets)

    def test_y4m(self, tmp_path: Path) -> None:
        clip = tmp_path / "raw.y4m"
        images = make_clip(clip, frames=5, width=48, height=32)
        with open_source(input=clip) as src:
            got = [src.read() for _ in range(6)]
        assert got[-1] is None
        # 4:2:0 chroma on sharp coloured edges of a tiny frame costs a few dB; no codec loss
        assert all(psnr(f.image, im) > 28 for f, im in zip(got[:5], images, strict=True))

    def test_real_clip(self, video_dir: Path) -> None:
        with FileSource(video_dir / "openh264_zhling_webcam_1280x720_25fps.mp4") as src:
            count = 0
            while (frame := src.read()) is not None:
                count += 1
                assert frame.image.shape == (720, 1280, 3)
        assert count == 19

    @pytest.mark.parametrize(
        ("make", "match"),
        [
            (lambda p: p, "does not exist; check the --input path"),
            (lambda p: (p.mkdir(), p)[1], "is not a file"),
            (lambda p: (p.write_text("not a video"), p)[1], "cannot read input video .*FFmpeg"),
            (lambda p: (p.write_bytes(b""), p)[1], "cannot read input video"),
        ],
    )
    def test_unreadable(self, tmp_path: Path, make, match: str) -> None:
        path = make(tmp_path / "in.mp4")
        with pytest.raises(SourceError, match=match) as info:
            FileSource(path)
        assert "\n" not in str(info.value)

    def test_audio_only_file(self, tmp_path: Path) -> None:
        import av

        path = tmp_path / "sound.m4a"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("aac", rate=48000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt")
            frame.sample_rate = 48000
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        with pytest.raises(SourceError, match="has no video stream"):
            FileSource(path)


class TestCameraSource:
    def test_frames_are_rgb_and_mode_is_requested(self, fake_camera: type[FakeCapture]) -> None:
        with CameraSource(0, width=64, height=48, fps=30) as cam:
            frames = [cam.read() for _ in range(3)]
            info = cam.info
        assert (info.width, info.height, info.live, info.name) == (64, 48, True, "camera 0")
        for i, frame in enumerate(frames):
            assert np.array_equal(frame.image, pattern_frame(i, 64, 48))  # BGR came in
            assert frame.index == i and frame.pts is None
        capture = fake_camera.instances[0]
        assert capture.api == cv2.CAP_V4L2  # the platform's backend first
        assert capture.props[cv2.CAP_PROP_FRAME_WIDTH] == 64
        assert capture.props[cv2.CAP_PROP_FPS] == 30
        assert capture.released

    def test_mode_not_granted_is_logged(
        self, fake_camera: type[FakeCapture], caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING), CameraSource(0, width=1280, height=720):
            pass
        assert "gives 64x48, not the 1280x720 asked for" in caplog.text

    def test_lost_mid_stream(self, fake_camera: type[FakeCapture]) -> None:
        fake_camera.FAIL_AFTER = 4
        with CameraSource(0) as cam:
            got = [cam.read() for _ in range(4)]
            with pytest.raises(SourceLost, match="camera 0 stopped delivering frames after 4"):
                cam.read()
        assert [f.index for f in got] == [0, 1, 2, 3]

    def test_raising_driver_counts_as_lost(
        self, fake_camera: type[FakeCapture], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with CameraSource(0) as cam:
            cam.read()

            def boom(self: FakeCapture) -> tuple[bool, None]:
                raise cv2.error("device gone")

            monkeypatch.setattr(FakeCapture, "read", boom)
            with pytest.raises(SourceLost):
                cam.read()

    def test_index_that_does_not_open_lists_those_that_do(
        self, fake_camera: type[FakeCapture]
    ) -> None:
        fake_camera.OPENABLE = {0, 2}
        with pytest.raises(SourceError) as info:
            CameraSource(5)
        message = str(info.value)
        assert message.startswith("camera 5 did not open (V4L2: did not open; any: did not open)")
        assert message.endswith("cameras that open: 0, 2 (try --device 0)")
        assert all(c.released for c in fake_camera.instances if c.opened)
        assert list_cameras() == [0, 2]

    def test_opens_but_no_frame(self, fake_camera: type[FakeCapture]) -> None:
        fake_camera.FAIL_AFTER = 0
        with pytest.raises(SourceError, match="opened but delivered no frame"):
            CameraSource(0)

    def test_no_camera_here_for_real(self) -> None:
        """The real OpenCV on this machine (no webcam): the message says none opens."""
        if list_cameras():
            pytest.skip("this machine has a camera")
        with pytest.raises(SourceError, match=r"camera 0 did not open .* no camera opens here"):
            CameraSource(0)


def test_open_source_needs_exactly_one() -> None:
    with pytest.raises(UsageError, match="either --device N"):
        open_source()
    with pytest.raises(UsageError):
        open_source(device=0, input="a.mp4")


def test_parse_device() -> None:
    assert sources.parse_device("2") == 2
    assert sources.parse_device("/dev/video2") == "/dev/video2"
