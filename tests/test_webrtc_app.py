"""The relay over real HTTP and real aiortc peers: signalling, the split view and controls,
receive-only mode, limits and bad input. The model is a real ONNX Runtime engine running a
colour-negative model, so "sharpened" pixels are easy to recognise."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest

pytest.register_assert_rewrite("conftest_browser")

from aiortc import AudioStreamTrack  # noqa: E402
from conftest_browser import (  # noqa: E402
    COLOUR,
    ColourTrack,
    connect,
    make_relay,
    mean_rgb,
    post_json,
    relay_server,
    wait_until,
)

from sharpcam.webrtc.app import PAGE_FILES, RelaySettings, parse_view  # noqa: E402
from sharpcam.webrtc.track import View  # noqa: E402

pytest_plugins = ["conftest_browser"]  # fixtures: invert_engine

ORIGINAL = np.array(COLOUR, float)
INVERTED = 255 - ORIGINAL
TOLERANCE = 25  # two lossy VP8 passes and two colour conversions


def near(rgb: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.abs(rgb - want).max() < TOLERANCE)


async def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` byte for byte (no client-side normalisation of ``..`` or ``%2e``)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# --- the page's files ----------------------------------------------------------------


def test_serves_the_page_files_with_their_types(invert_engine) -> None:
    async def run() -> None:
        async with relay_server(make_relay(invert_engine)) as url, aiohttp.ClientSession() as s:
            for path, (_, content_type) in PAGE_FILES.items():
                async with s.get(url.rstrip("/") + path) as r:
                    assert r.status == 200, path
                    assert r.content_type == content_type
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
                    assert len(await r.read()) > 100
            async with s.get(url) as r:
                assert '<script src="/client.js"' in await r.text()
            async with s.get(url + "config") as r:
                config = await r.json()
            assert config == {
                "mode": "relay",
                "model": "invert test model",
                "max_peers": 4,
                "peers": 0,
                "scale": 1,
                "tier": None,  # a plain engine: no tiers
                "tier_note": "",
            }

    asyncio.run(run())


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/../../../../etc/passwd",
        "/%2e%2e/pyproject.toml",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static/../webrtc.py",
        "/static/index.html",
        "/client.js/../../pyproject.toml",
        "/..%5c..%5cpyproject.toml",
        "/webrtc.py",
        "/__init__.py",
    ],
)
def test_nothing_but_the_page_is_served(invert_engine, path: str) -> None:
    async def run() -> None:
        async with relay_server(make_relay(invert_engine)) as url:
            status, body = await raw_get(url, path)
        assert status in (400, 404), (path, status)
        assert b"[project]" not in body and b"root:" not in body and b"import" not in body

    asyncio.run(run())


# --- bad offers ------------------------------------------------------------------------

BAD_BODIES = [
    (b"not json at all", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"type": "offer"}', '"sdp" is missing'),
    (b'{"sdp": "", "type": "offer"}', '"sdp" is missing'),
    (b'{"sdp": "v=0", "type": "answer"}', '"type" must be "offer"'),
    (b'{"sdp": "hello", "type": "offer"}', "SDP offer is malformed"),
    (b'{"sdp": "v=0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 96\\r\\n", "type": "offer"}', "SDP"),
    (b'{"sdp": "v=0\\r\\nm=video x y z\\r\\n", "type": "offer"}', "cannot be parsed"),
    (b'{"sdp": "v=0", "type": "offer", "split": 2}', '"split" must be a number in [0, 1]'),
    (b'{"sdp": "v=0", "type": "offer", "sharpen": "yes"}', '"sharpen" must be true or false'),
    (b"\xff\xfe\x00", "not JSON"),
]


def test_bad_offers_get_400_with_a_json_error_and_leave_nothing_open(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            for raw, message in BAD_BODIES:
                status, body, _ = await post_json(url + "offer", None, raw=raw)
                assert status == 400, raw
                assert message in body["error"], (raw, body)
                assert "\n" not in body["error"]
            assert not relay.peers
            client = await connect(url, track=ColourTrack())  # the relay still works
            await wait_until(lambda: len(client.frames) >= 3, "frames after bad offers")
            await client.close()

    asyncio.run(run())


def test_an_offer_without_video_gets_400(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            with pytest.raises(AssertionError, match=r"400.*no video to sharpen"):
                await connect(url, channel=True)
            with pytest.raises(AssertionError, match=r"400.*no video to sharpen"):
                await connect(url, recvonly=True)  # relay mode needs the peer's camera
            assert not relay.peers

    asyncio.run(run())


def test_an_oversized_body_gets_413(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            big = json.dumps({"sdp": "v=0\r\n" + "a=x\r\n" * 20000, "type": "offer"}).encode()
            status, body, _ = await post_json(url + "offer", None, raw=big)
            assert status == 413 and "bytes" in body["error"]
            assert not relay.peers

    asyncio.run(run())


def test_too_many_peers_get_503_until_one_leaves(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine, max_peers=1)
        async with relay_server(relay) as url:
            first = await connect(url, track=ColourTrack())
            await wait_until(lambda: len(first.frames) >= 1, "the first peer's frames")
            with pytest.raises(AssertionError, match=r"503.*max-peers"):
                await connect(url, track=ColourTrack())
            await first.close()
            await wait_until(lambda: not relay.peers, "the server to free the first peer")
            second = await connect(url, track=ColourTrack())
            await wait_until(lambda: len(second.frames) >= 1, "the second peer's frames")
            await second.close()

    asyncio.run(run())


def test_a_peer_that_never_connects_is_closed_after_the_timeout(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        relay.settings = RelaySettings(connect_timeout_s=0.5)
        async with relay_server(relay) as url:
            status, _, _ = await connect_raw_offer(url)  # answer received, never applied
            assert status == 200
            await wait_until(lambda: not relay.peers, "the server to give up on the peer")

    asyncio.run(run())


def test_503_carries_retry_after(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine, max_peers=1)
        async with relay_server(relay) as url:
            first = await connect(url, track=ColourTrack())
            probe = await connect_raw_offer(url)
            assert probe[0] == 503 and probe[2].get("Retry-After") == "5"
            assert "error" in probe[1]
            await first.close()

    asyncio.run(run())


async def connect_raw_offer(url: str) -> tuple[int, dict, dict]:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(ColourTrack())
    await pc.setLocalDescription(await pc.createOffer())
    try:
        return await post_json(url + "offer", {"sdp": pc.localDescription.sdp, "type": "offer"})
    finally:
        await pc.close()


# --- what comes back -------------------------------------------------------------------


def test_frames_come_back_split_original_and_sharpened(invert_engine) -> None:
    async def run() -> None:
        async with relay_server(make_relay(invert_engine)) as url:
            client = await connect(url, track=ColourTrack(320, 240))
            await wait_until(lambda: len(client.frames) >= 8, "8 frames back")
            frame = client.frames[-1].to_ndarray(format="rgb24")
            assert frame.shape == (240, 320, 3)
            assert near(mean_rgb(frame, 0.05, 0.4), ORIGINAL), mean_rgb(frame, 0.05, 0.4)
            assert near(mean_rgb(frame, 0.6, 0.95), INVERTED), mean_rgb(frame, 0.6, 0.95)
            await client.close()

    asyncio.run(run())


def test_the_data_channel_moves_the_divider_toggles_and_reports(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            client = await connect(url, track=ColourTrack(), channel=True)

            def last_frame() -> np.ndarray:
                return client.frames[-1].to_ndarray(format="rgb24")

            await wait_until(lambda: client.channel.readyState == "open", "channel open")
            client.channel.send(json.dumps({"split": 0.0}))
            await wait_until(
                lambda: client.frames and near(mean_rgb(last_frame(), 0.05, 0.4), INVERTED),
                "the whole frame sharpened after split 0",
            )
            client.channel.send(json.dumps({"sharpen": False}))
            await wait_until(
                lambda: near(mean_rgb(last_frame(), 0.6, 0.95), ORIGINAL),
                "the original everywhere after sharpen off",
            )
            client.channel.send("{not json")
            client.channel.send(json.dumps({"split": -1}))
            await wait_until(
                lambda: sum(m["type"] == "error" for m in client.messages) == 2,
                "two error replies",
            )
            errors = [m["error"] for m in client.messages if m["type"] == "error"]
            assert "not JSON" in errors[0] and '"split"' in errors[1]
            await wait_until(
                lambda: sum(m["type"] == "stats" for m in client.messages) >= 2, "stats"
            )
            stats = [m for m in client.messages if m["type"] == "stats"][-1]
            assert stats["model"] == "invert test model"
            assert stats["frames_out"] > 0 and stats["fps"] > 0 and stats["sharpen"] is False
            assert {"model_ms", "model_ms_p95", "dropped", "server_ms", "errors"} <= set(stats)
            peer = next(iter(relay.peers))
            assert peer.view == View(sharpen=False, split=0.0)
            await client.close()

    asyncio.run(run())


def test_offer_options_set_the_initial_view(invert_engine) -> None:
    async def run() -> None:
        async with relay_server(make_relay(invert_engine)) as url:
            client = await connect(url, track=ColourTrack(), options={"split": 1.0})
            await wait_until(lambda: len(client.frames) >= 3, "frames")
            frame = client.frames[-1].to_ndarray(format="rgb24")
            assert near(mean_rgb(frame, 0.6, 0.95), ORIGINAL)
            await client.close()

    asyncio.run(run())


def test_audio_and_extra_tracks_are_drained_not_returned(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            client = await connect(url, track=ColourTrack())
            client.pc.addTrack(AudioStreamTrack())  # too late for this offer: nothing breaks
            await wait_until(lambda: len(client.frames) >= 3, "frames")
            await client.close()

            from aiortc import RTCConfiguration, RTCPeerConnection

            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(AudioStreamTrack())
            pc.addTrack(ColourTrack())
            await pc.setLocalDescription(await pc.createOffer())
            status, answer, _ = await post_json(
                url + "offer", {"sdp": pc.localDescription.sdp, "type": "offer"}
            )
            assert status == 200 and "m=audio" in answer["sdp"]
            peer = next(iter(relay.peers))
            assert len(peer.sinks) == 1 and peer.track is not None
            await pc.close()

    asyncio.run(run())


def test_receive_only_mode_streams_the_source_to_every_peer(invert_engine) -> None:
    async def run() -> None:
        source = ColourTrack(320, 240)
        relay = make_relay(invert_engine, source=source)
        async with relay_server(relay) as url, aiohttp.ClientSession() as s:
            async with s.get(url + "config") as r:
                assert (await r.json())["mode"] == "receive"
            a = await connect(url, recvonly=True, options={"split": 0.0})
            b = await connect(url, recvonly=True)
            await wait_until(lambda: len(a.frames) >= 5 and len(b.frames) >= 5, "both peers")
            fa = a.frames[-1].to_ndarray(format="rgb24")
            fb = b.frames[-1].to_ndarray(format="rgb24")
            assert near(mean_rgb(fa, 0.05, 0.4), INVERTED) and near(
                mean_rgb(fa, 0.6, 0.95), INVERTED
            )
            assert near(mean_rgb(fb, 0.05, 0.4), ORIGINAL) and near(
                mean_rgb(fb, 0.6, 0.95), INVERTED
            )
            await a.close()
            await wait_until(lambda: len(relay.peers) == 1, "peer a freed")
            n = len(b.frames)
            await wait_until(lambda: len(b.frames) > n + 3, "b still served after a left")
            # what a peer sends in receive-only mode is drained, not relayed
            c = await connect(url, track=ColourTrack(colour=(0, 255, 0)), options={"split": 0})
            await wait_until(lambda: len(c.frames) >= 3, "c's frames")
            assert near(mean_rgb(c.frames[-1].to_ndarray(format="rgb24"), 0.1, 0.9), INVERTED)
            await b.close()
            await c.close()
        assert source.readyState == "live"  # the relay does not own its source

    asyncio.run(run())


class TestParseView:
    def test_updates_only_the_given_keys(self) -> None:
        assert parse_view('{"split": 0.25}', View(sharpen=False)) == View(False, 0.25)
        assert parse_view({"sharpen": True}, View(False, 0.1)) == View(True, 0.1)
        assert parse_view({"split": 1}, View()) == View(True, 1.0)

    @pytest.mark.parametrize(
        "message", ['"x"', "[]", {"split": True}, {"split": "0.5"}, {"sharpen": 1}]
    )
    def test_rejects_wrong_types(self, message: object) -> None:
        with pytest.raises(ValueError):
            parse_view(message, View())
