"""Bounded everything, against a real server (aiohttp + aiortc): offers that never connect
free their slot, one client cannot hold every pending slot, slow request heads and bodies
are cut off, open connections are capped, deep JSON is a 400 (over HTTP and on the data
channel), and the body limit's edge is exact."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.register_assert_rewrite("conftest_browser")

from aiortc import RTCConfiguration, RTCPeerConnection  # noqa: E402
from conftest_browser import (  # noqa: E402
    ColourTrack,
    connect,
    make_relay,
    post_json,
    relay_server,
    wait_until,
)

from sharpcam.webrtc.app import RelaySettings  # noqa: E402
from sharpcam.webrtc.command import ServeSettings, build_parser  # noqa: E402
from sharpcam.webrtc.limits import HttpLimits  # noqa: E402

pytest_plugins = ["conftest_browser"]  # fixtures: invert_engine

KIB64 = 64 * 1024


def with_settings(relay, **changes) -> None:  # type: ignore[no-untyped-def]
    relay.settings = RelaySettings(**{**relay.settings.__dict__, **changes})


async def dangling_offer(url: str) -> tuple[int, dict, dict]:
    """POST a real offer and never apply the answer (the peer can never connect)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(ColourTrack())
    await pc.setLocalDescription(await pc.createOffer())
    try:
        return await post_json(url + "offer", {"sdp": pc.localDescription.sdp, "type": "offer"})
    finally:
        await pc.close()


async def open_raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    return reader, writer, f"{host}:{port}"


async def read_until_closed(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """Everything the server sends until it closes (a guard fails after ``within_s``)."""
    return await asyncio.wait_for(reader.read(), within_s)


def test_the_pending_peer_timeout_defaults_to_10_s() -> None:
    assert RelaySettings().connect_timeout_s == 10.0
    assert ServeSettings().connect_timeout_s == 10.0
    assert build_parser().parse_args([]).connect_timeout == 10.0
    assert build_parser().parse_args(["--connect-timeout", "3"]).connect_timeout == 3.0


def test_an_offer_that_never_connects_frees_its_slot(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine, max_peers=1)
        with_settings(relay, connect_timeout_s=0.5)
        async with relay_server(relay) as url:
            status, _, _ = await dangling_offer(url)
            assert status == 200 and len(relay.peers) == 1
            status, _, _ = await dangling_offer(url)
            assert status == 503  # the slot is held...
            await wait_until(lambda: not relay.peers, "the pending peer to expire")
            client = await connect(url, track=ColourTrack())  # ...and then free again
            await wait_until(lambda: len(client.frames) >= 2, "frames in the freed slot")
            # a connected peer is not expired by the timeout
            await asyncio.sleep(0.8)
            assert len(relay.peers) == 1
            await client.close()

    asyncio.run(run())


def test_one_client_cannot_hold_every_pending_slot(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine, max_peers=4)
        with_settings(relay, connect_timeout_s=1.0, max_pending_per_client=2)
        async with relay_server(relay) as url:
            assert [(await dangling_offer(url))[0] for _ in range(2)] == [200, 200]
            status, body, headers = await dangling_offer(url)
            assert status == 429 and "not connected" in body["error"]
            assert headers.get("Retry-After") == "5"
            assert len(relay.peers) == 2  # two slots stay for everyone else
            await wait_until(lambda: not relay.peers, "the pending peers to expire")
            assert (await dangling_offer(url))[0] == 200

    asyncio.run(run())


def test_a_slow_header_client_is_cut_off(invert_engine) -> None:
    async def run() -> None:
        limits = HttpLimits(header_timeout_s=0.5)
        async with relay_server(make_relay(invert_engine), limits=limits) as url:
            # a head sent a byte at a time, forever
            reader, writer, host = await open_raw(url)
            start = time.monotonic()

            async def drip() -> None:
                writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
                for _ in range(200):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.05)

            dripping = asyncio.create_task(drip())
            answer = await read_until_closed(reader, 10)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert time.monotonic() - start < 5
            dripping.cancel()
            writer.close()

            # a connection that never sends anything is closed too
            reader, writer, _ = await open_raw(url)
            assert (await read_until_closed(reader, 10)).startswith(b"HTTP/1.1 408")
            writer.close()

            # keep-alive: a quick first request is answered, a slow second head is cut off
            reader, writer, host = await open_raw(url)
            writer.write(f"GET /config HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(length)
            writer.write(b"GET /config HTTP/1.1\r\nHo")
            assert (await read_until_closed(reader, 10)).startswith(b"HTTP/1.1 408")
            writer.close()

            # the deadline covers heads only: offers (answered after ICE gathering) still
            # work under it, and their peers connect
            client = await connect(url, track=ColourTrack())
            await wait_until(lambda: len(client.frames) >= 2, "frames under a 0.5 s deadline")
            await client.close()

    asyncio.run(run())


def test_a_slow_body_gets_408(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        with_settings(relay, read_timeout_s=0.5)
        async with relay_server(relay) as url:
            reader, writer, host = await open_raw(url)
            writer.write(
                f"POST /offer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n{".encode()
            )
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            writer.close()
            assert not relay.peers

    asyncio.run(run())


def test_open_connections_are_capped(invert_engine) -> None:
    async def run() -> None:
        limits = HttpLimits(max_connections=3)
        async with relay_server(make_relay(invert_engine), limits=limits) as url:
            held = [await open_raw(url) for _ in range(3)]
            reader, writer, _ = await open_raw(url)
            assert (await read_until_closed(reader, 10)).startswith(b"HTTP/1.1 503")
            writer.close()
            for _, w, _ in held:
                w.close()
            await asyncio.sleep(0)  # a guard is not needed: the next request retries

            async def config_ok() -> bool:
                reader, writer, host = await open_raw(url)
                writer.write(f"GET /config HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                line = await asyncio.wait_for(reader.readline(), 10)
                writer.close()
                return line.startswith(b"HTTP/1.1 200")

            end = time.monotonic() + 10
            while not await config_ok():
                assert time.monotonic() < end, "the server never accepted again"
                await asyncio.sleep(0.05)

    asyncio.run(run())


def test_deeply_nested_json_is_a_400_over_http_and_on_the_data_channel(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            for deep in (b"[" * 30000, b'{"a":' * 10000, b"[" * 30000 + b"]" * 30000):
                status, body, _ = await post_json(url + "offer", None, raw=deep)
                assert status == 400 and "nested too deeply" in body["error"], deep[:10]
            client = await connect(url, track=ColourTrack(), channel=True)
            await wait_until(lambda: client.channel.readyState == "open", "channel open")
            client.channel.send("[" * 30000)
            await wait_until(
                lambda: any(m["type"] == "error" for m in client.messages), "the error reply"
            )
            error = next(m["error"] for m in client.messages if m["type"] == "error")
            assert "nested too deeply" in error
            # the sender's peer stays: frames keep coming and the channel still works
            n = len(client.frames)
            await wait_until(lambda: len(client.frames) > n + 3, "frames after the bad message")
            assert len(relay.peers) == 1 and client.pc.connectionState == "connected"
            client.channel.send(json.dumps({"split": 0.25}))
            await wait_until(
                lambda: next(iter(relay.peers)).view.split == 0.25, "the next message applied"
            )
            await client.close()

    asyncio.run(run())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_body_limit_is_64_kib_exactly(invert_engine, chunked: bool) -> None:
    def body_of(size: int) -> bytes:
        head = b'{"type": "answer", "sdp": "v=0\\r\\n'
        tail = b'"}'
        return head + b"a" * (size - len(head) - len(tail)) + tail

    async def run() -> None:
        relay = make_relay(invert_engine)
        assert relay.settings.max_body_bytes == KIB64
        async with relay_server(relay) as url:
            for size, want in ((KIB64, 400), (KIB64 + 1, 413)):
                raw = body_of(size)
                assert len(raw) == size
                if chunked:  # no Content-Length: the limit is found while reading

                    async def chunks(raw: bytes = raw):  # type: ignore[no-untyped-def]
                        for i in range(0, len(raw), 4096):
                            yield raw[i : i + 4096]

                    data = chunks()
                    status, body, _ = await post_json(url + "offer", None, raw=data)
                else:
                    status, body, _ = await post_json(url + "offer", None, raw=raw)
                assert status == want, (size, body)
                # at the limit the body is read and parsed: its "type" is what is wrong
                wrong = '"type" must be "offer"' if want == 400 else "over 65536 bytes"
                assert wrong in body["error"], (size, body)
            assert not relay.peers

    asyncio.run(run())
