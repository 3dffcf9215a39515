"""Helpers and fixtures for the WebRTC tests: a real model with a visible effect, synthetic
aiortc tracks, an aiortc client, and an in-process relay server.

Import what a test module needs (``from conftest_browser import ...``); pytest finds
fixtures imported into a test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnx
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from av import VideoFrame
from onnx import TensorProto, helper

from sharpcam.contract import INPUT_NAME, OUTPUT_NAME
from sharpcam.engine import Engine
from sharpcam.webrtc import start_site
from sharpcam.webrtc.access import TOKEN_HEADER, AccessPolicy
from sharpcam.webrtc.app import Relay, RelaySettings
from sharpcam.webrtc.limits import HttpLimits
from sharpcam.webrtc.server import url_for

#: The colour the synthetic sources show (RGB); far from mid-grey so inversion is obvious.
COLOUR = (200, 60, 40)
#: What the invert model makes of it.
INVERTED_COLOUR = 255 - np.array(COLOUR, float)


def write_invert_model(path: Path) -> Path:
    """An ONNX model of the sharpcam contract whose effect is unmistakable:
    ``sharpened = clip(1 - frames, 0, 1)`` (a colour negative)."""
    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["one", INPUT_NAME], ["negative"]),
            helper.make_node("Clip", ["negative", "zero", "one"], [OUTPUT_NAME]),
        ],
        "invert",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)],
        initializer=[
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def write_invert_x2_model(path: Path) -> Path:
    """A ×2 model of the sharpcam contract with the same unmistakable effect: each pixel
    becomes a 2x2 block (a 1x1 convolution makes 4 copies per channel, ``DepthToSpace``
    lays them out) of its colour negative. Its metadata says ``sharpcam.scale = 2``."""
    kernel = np.zeros((12, 3, 1, 1), np.float32)
    for c in range(3):
        kernel[c * 4 : c * 4 + 4, c] = -1.0  # 1 - x through the bias below
    graph = helper.make_graph(
        [
            helper.make_node("Conv", [INPUT_NAME, "kernel", "bias"], ["copies"]),
            helper.make_node("DepthToSpace", ["copies"], ["big"], blocksize=2, mode="CRD"),
            helper.make_node("Clip", ["big", "zero", "one"], [OUTPUT_NAME]),
        ],
        "invert_x2",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
        initializer=[
            helper.make_tensor("kernel", TensorProto.FLOAT, [12, 3, 1, 1], kernel.ravel()),
            helper.make_tensor("bias", TensorProto.FLOAT, [12], [1.0] * 12),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (("scale", "2"), ("mode", "x2"), ("tier", "quality")):
        model.metadata_props.add(key=f"sharpcam.{key}", value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def invert_x2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the ×2 invert model (see :func:`write_invert_x2_model`)."""
    return write_invert_x2_model(tmp_path_factory.mktemp("models") / "invert_x2.onnx")


@pytest.fixture(scope="session")
def invert_x2_engine(invert_x2_model: Path) -> Engine:
    """A real :class:`~sharpcam.engine.Engine` (ONNX Runtime, CPU) running the ×2 invert
    model."""
    return Engine(invert_x2_model, provider="cpu", threads=1, upscale=2)


@pytest.fixture(scope="session")
def invert_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the invert model (see :func:`write_invert_model`)."""
    return write_invert_model(tmp_path_factory.mktemp("models") / "invert.onnx")


@pytest.fixture(scope="session")
def invert_engine(invert_model: Path) -> Engine:
    """A real :class:`~sharpcam.engine.Engine` (ONNX Runtime, CPU) running the invert model."""
    return Engine(invert_model, provider="cpu", threads=1)


def solid_frame(width: int, height: int, colour: tuple[int, int, int] = COLOUR) -> np.ndarray:
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = colour
    return frame


def write_clip(
    path: Path,
    *,
    frames: int = 10,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    colour: tuple[int, int, int] = COLOUR,
) -> Path:
    """A small H.264 clip of solid ``colour`` frames, written with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "10"}
        for i in range(frames):
            frame = VideoFrame.from_ndarray(solid_frame(width, height, colour), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class ColourTrack(VideoStreamTrack):
    """A real aiortc video track: solid ``colour`` frames at ``fps`` with proper pts."""

    def __init__(
        self, width: int = 320, height: int = 240, colour: tuple[int, int, int] = COLOUR
    ) -> None:
        super().__init__()
        self._rgb = solid_frame(width, height, colour)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class QueueTrack(MediaStreamTrack):
    """A track the test feeds by hand (like aiortc's remote track, it queues what arrives).

    ``push(value, pts)`` queues a 16x16 frame filled with ``value``; ``end()`` ends it.
    """

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[VideoFrame | None] = asyncio.Queue()
        self.time_base = fractions.Fraction(1, 90000)

    def push(self, value: int, pts: int) -> None:
        frame = VideoFrame.from_ndarray(np.full((16, 16, 3), value, np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        self.queue.put_nowait(frame)

    def end(self) -> None:
        self.queue.put_nowait(None)

    async def recv(self) -> VideoFrame:
        frame = await self.queue.get()
        if frame is None:
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        return frame


def mean_rgb(
    frame: np.ndarray, x0: float, x1: float, y0: float = 0.1, y1: float = 0.6
) -> np.ndarray:
    """Mean RGB of the region between fractions ``x0..x1`` of the width, ``y0..y1`` of height."""
    h, w = frame.shape[:2]
    region = frame[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]
    return region.reshape(-1, 3).mean(axis=0)


async def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``deadline_s`` (a safety
    net against hangs, not a speed claim)."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def relay_server(
    relay: Relay, *, access: AccessPolicy | None = None, limits: HttpLimits | None = None
) -> AsyncIterator[str]:
    """Serve ``relay`` on a free loopback port in this event loop; yield its URL (with
    ``?token=...`` when ``access`` has a token, as ``sharpcam serve`` prints it)."""
    runner, port = await start_site(relay, "127.0.0.1", 0, access=access, limits=limits)
    try:
        yield url_for("127.0.0.1", port, access.token if access else None)
    finally:
        await relay.close()
        await runner.cleanup()


def make_relay(
    processor: Any,
    *,
    max_peers: int = 4,
    source: MediaStreamTrack | None = None,
    stats_interval_s: float = 0.2,
) -> Relay:
    return Relay(
        processor,
        label="invert test model",
        source=source,
        settings=RelaySettings(max_peers=max_peers, stats_interval_s=stats_interval_s),
    )


def split_token(url: str) -> tuple[str, str | None]:
    """``"http://h:p/?token=T"`` → ``("http://h:p/", "T")``; no token: ``(url, None)``."""
    base, _, query = url.partition("?")
    token = dict(p.partition("=")[::2] for p in query.split("&") if p).get("token")
    return base, token


async def post_json(
    url: str,
    body: Any,
    *,
    raw: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST ``body`` as JSON (or ``raw`` bytes) to ``url`` (with ``token`` in its header;
    ``headers`` added or replacing ours); return status, JSON, response headers."""
    data = raw if raw is not None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **({TOKEN_HEADER: token} if token else {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={**sent, **(headers or {})}) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


@dataclass
class Client:
    """An aiortc peer connected to the relay, collecting the frames it gets back."""

    pc: RTCPeerConnection
    frames: list[VideoFrame] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    channel: Any = None
    reader: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        await self.pc.close()


async def connect(
    url: str,
    *,
    track: MediaStreamTrack | None = None,
    recvonly: bool = False,
    channel: bool = False,
    options: dict[str, Any] | None = None,
) -> Client:
    """Offer to ``url + "offer"`` like the page does (no trickle, the token of ``url``'s
    ``?token=`` in its header); return a connected :class:`Client` whose remote frames
    accumulate in ``client.frames``.

    Raises:
        AssertionError: the server refused the offer (status and error in the message).
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = Client(pc)
    if track is not None:
        pc.addTrack(track)
    if recvonly:
        pc.addTransceiver("video", direction="recvonly")
    if channel:
        client.channel = pc.createDataChannel("sharpcam")

        @client.channel.on("message")
        def on_message(message: str) -> None:
            client.messages.append(json.loads(message))

    @pc.on("track")
    def on_track(remote: MediaStreamTrack) -> None:
        async def read() -> None:
            with contextlib.suppress(Exception):
                while True:
                    client.frames.append(await remote.recv())

        client.reader = asyncio.ensure_future(read())

    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, **(options or {})}
    base, token = split_token(url)
    status, answer, _ = await post_json(base + "offer", body, token=token)
    if status != 200:
        await pc.close()
        raise AssertionError(f"offer refused: HTTP {status} {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    return client
