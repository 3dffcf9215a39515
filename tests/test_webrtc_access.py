"""The relay only talks to its own page: a real server (aiohttp + aiortc) and real offers
made by aiortc, sent as a DNS-rebinding page or a cross-origin page would send them."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

pytest.register_assert_rewrite("conftest_browser")

from aiortc import RTCConfiguration, RTCPeerConnection  # noqa: E402
from conftest_browser import (  # noqa: E402
    ColourTrack,
    connect,
    make_relay,
    post_json,
    relay_server,
    split_token,
    wait_until,
)

from sharpcam.webrtc.access import (  # noqa: E402
    TOKEN_HEADER,
    AccessPolicy,
    new_token,
    origin_refusal,
    split_host,
)

pytest_plugins = ["conftest_browser"]  # fixtures: invert_engine


async def real_offer(recvonly: bool = False) -> tuple[RTCPeerConnection, dict[str, str]]:
    """A valid offer from a real aiortc peer (sending video, or receive-only)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if recvonly:
        pc.addTransceiver("video", direction="recvonly")
    else:
        pc.addTrack(ColourTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"sdp": pc.localDescription.sdp, "type": "offer"}


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def test_a_dns_rebinding_request_with_a_foreign_host_is_refused(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url, aiohttp.ClientSession() as s:
            port = port_of(url)
            pc, offer = await real_offer()
            # what a page on evil.example sends once its name resolves to 127.0.0.1
            evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
            status, body, headers = await post_json(url + "offer", offer, headers=evil)
            assert status == 403 and "evil.example" in body["error"]
            assert "Access-Control-Allow-Origin" not in headers
            for path in ("", "config", "client.js"):  # nothing is served to that name
                async with s.get(url + path, headers={"Host": f"evil.example:{port}"}) as r:
                    assert r.status == 403, path
            # this machine's names on the wrong port are not this server either
            status, _, _ = await post_json(
                url + "offer", offer, headers={"Host": f"127.0.0.1:{port + 1}"}
            )
            assert status == 403
            assert not relay.peers
            # its own names pass: localhost, 127.0.0.1, [::1], each with the port
            for host in (f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
                async with s.get(url + "config", headers={"Host": host}) as r:
                    assert r.status == 200, host
            await pc.close()

    asyncio.run(run())


def test_allow_host_admits_a_reverse_proxys_name(invert_engine) -> None:
    async def run() -> None:
        access = AccessPolicy(allow_hosts=("cam.example.org",))
        relay = make_relay(invert_engine)
        async with relay_server(relay, access=access) as url:
            pc, offer = await real_offer()
            proxied = {"Host": "cam.example.org", "Origin": "https://cam.example.org"}
            status, body, _ = await post_json(url + "offer", offer, headers=proxied)
            assert status == 200 and body["type"] == "answer"
            status, _, _ = await post_json(url + "offer", offer, headers={"Host": "other.org"})
            assert status == 403
            await pc.close()

    asyncio.run(run())


def test_a_foreign_origin_is_refused_and_cors_stays_closed(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url, aiohttp.ClientSession() as s:
            port = port_of(url)
            pc, offer = await real_offer()
            for origin in ("http://evil.example", "null", f"https://127.0.0.1:{port}x"):
                status, body, headers = await post_json(
                    url + "offer", offer, headers={"Origin": origin}
                )
                assert status == 403 and "refused" in body["error"], origin
                assert "Access-Control-Allow-Origin" not in headers
            # a preflight gets no CORS grant either
            preflight = {
                "Origin": "http://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            }
            async with s.options(url + "offer", headers=preflight) as r:
                assert r.status >= 400 and "Access-Control-Allow-Origin" not in r.headers
            assert not relay.peers
            # the page's own origin passes (and so does no Origin: a non-browser client)
            status, _, _ = await post_json(
                url + "offer", offer, headers={"Origin": f"http://127.0.0.1:{port}"}
            )
            assert status == 200
            await pc.close()

    asyncio.run(run())


def test_a_text_plain_offer_is_refused_with_415(invert_engine) -> None:
    async def run() -> None:
        relay = make_relay(invert_engine)
        async with relay_server(relay) as url:
            pc, offer = await real_offer()
            # the "simple" cross-origin POST a page can send without a preflight
            for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
                status, body, _ = await post_json(
                    url + "offer", offer, headers={"Content-Type": content_type}
                )
                assert status == 415 and "application/json" in body["error"], content_type
            assert not relay.peers
            status, _, _ = await post_json(
                url + "offer", offer, headers={"Content-Type": "application/json; charset=utf-8"}
            )
            assert status == 200
            await pc.close()

    asyncio.run(run())


def test_the_token_is_required_in_source_mode_and_accepted_when_right(invert_engine) -> None:
    async def run() -> None:
        token = new_token()
        relay = make_relay(invert_engine, source=ColourTrack(160, 120))
        access = AccessPolicy(token=token)
        async with relay_server(relay, access=access) as url, aiohttp.ClientSession() as s:
            base, in_url = split_token(url)
            assert in_url == token and len(token) >= 32
            pc, offer = await real_offer(recvonly=True)
            wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
            for given in (None, "", wrong, token + "x"):
                status, body, _ = await post_json(base + "offer", offer, token=given)
                assert status == 403 and "token" in body["error"], given
                assert token not in body["error"]
            async with s.get(base + "config") as r:
                assert r.status == 403
            async with s.get(base + "config", headers={TOKEN_HEADER: token}) as r:
                assert r.status == 200 and (await r.json())["mode"] == "receive"
            async with s.get(base) as r:  # the page itself is public: it holds no secret
                assert r.status == 200
            assert not relay.peers
            await pc.close()
            client = await connect(url, recvonly=True)  # the token from the URL, in a header
            await wait_until(lambda: len(client.frames) >= 3, "frames with the right token")
            await client.close()

    asyncio.run(run())


class TestPieces:
    def test_split_host(self) -> None:
        assert split_host("LocalHost:8080") == ("localhost", 8080)
        assert split_host("[::1]:9") == ("::1", 9)
        assert split_host("[::1]") == ("::1", None)
        assert split_host("example.org") == ("example.org", None)
        for bad in ("", ":80", "a:b", "a:0", "a:70000", "[::1", "[::1]x", "a/b:1", "u@h"):
            assert split_host(bad) is None, bad

    def test_origin(self) -> None:
        policy = AccessPolicy()
        assert origin_refusal(policy, None, "127.0.0.1:8080") is None
        assert origin_refusal(policy, "http://127.0.0.1:8080", "127.0.0.1:8080") is None
        assert origin_refusal(policy, "http://localhost", "localhost:80") is None
        assert origin_refusal(policy, "https://h.org", "h.org") is None
        assert origin_refusal(policy, "http://h.org", "h.org:8080") is not None
        assert origin_refusal(policy, "file://", "127.0.0.1:8080") is not None
        assert origin_refusal(policy, "http://127.0.0.1:bad", "127.0.0.1:8080") is not None

    def test_token_compare(self) -> None:
        assert AccessPolicy().token_ok(None)
        policy = AccessPolicy(token="abc")
        assert policy.token_ok("abc") and not policy.token_ok("abd")
        assert not policy.token_ok(None) and not policy.token_ok("")
        with pytest.raises(ValueError):
            AccessPolicy(token="")
        with pytest.raises(ValueError):
            AccessPolicy(allow_hosts=("http://x/",))
