"""The relay's web side: peer connections, signalling and the page's three files.

Endpoints (aiortc's server-example layout):

* ``GET /``, ``GET /client.js``, ``GET /style.css``: the page, from ``sharpcam/static``.
  Nothing else is served: no path from a request ever reaches the file system.
* ``GET /config``: ``{"mode": "relay"|"receive", "model": str, "max_peers": int,
  "peers": int, "scale": int, "tier": str | null, "tier_note": str}``, so the page knows
  whether to ask for the camera and whether the model enlarges (``scale`` 2: a ×2 model);
  ``tier`` is the model tier in use (``null`` for a processor without tiers) and
  ``tier_note`` says why it changed during the run (a step-down), else ``""``.
* ``POST /offer``: JSON ``{"sdp": str, "type": "offer"}`` plus optional ``"sharpen": bool``
  and ``"split": float`` in [0, 1]; answers ``{"sdp": str, "type": "answer"}``. The answer
  holds all ICE candidates (aiortc does not trickle). Errors are JSON ``{"error": str}``:
  400 for a malformed body or SDP (JSON nested too deeply included), 403 for a foreign
  Host or Origin or a missing token, 408 for a body that does not arrive in time, 413 for
  a body over the limit, 415 for a body that is not ``application/json``, 429 when the
  client already has ``max_pending_per_client`` offers that have not connected, 503 when
  the peer limit is reached.

Who may call these, and with what, is :mod:`sharpcam.webrtc.access`; bounds on HTTP
connections are :mod:`sharpcam.webrtc.limits`.

In *relay* mode each peer's first video track comes back sharpened on the same
transceiver. In *receive* mode (a local source) every peer gets the source, sharpened,
and what it sends is discarded. A data channel labelled ``"sharpcam"``, if the peer opens
one, carries ``{"sharpen": bool, "split": float}`` to the server and
``{"type": "stats", ...}`` (see :class:`~sharpcam.webrtc.track.TrackStats`) back, each
second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole

from sharpcam.webrtc.access import AccessPolicy, access_middleware
from sharpcam.webrtc.limits import FD_ERRNOS, FdIncidents, head_clock_middleware
from sharpcam.webrtc.source import Fanout
from sharpcam.webrtc.track import FrameProcessor, SharpenTrack, View, scale_of

log = logging.getLogger(__name__)

#: The data channel label the page opens for live controls and figures.
CONTROL_CHANNEL = "sharpcam"

#: Files of the page: URL path -> (file in sharpcam/static, content type).
PAGE_FILES = {
    "/": ("index.html", "text/html"),
    "/client.js": ("client.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:"
    ),
    "Referrer-Policy": "no-referrer",  # the page's address may hold the token
}

RELAY_KEY: web.AppKey[Relay] = web.AppKey("relay")


class OfferError(ValueError):
    """The offer cannot be answered (bad SDP, nothing to sharpen); HTTP 400."""


class RelayFull(RuntimeError):
    """The peer limit is reached (or no file descriptor is left); HTTP 503."""


class TooManyPending(RuntimeError):
    """This client already has its share of offers that have not connected; HTTP 429."""


@dataclass(frozen=True)
class RelaySettings:
    """Limits of one relay.

    Args:
        max_peers: peer connections open at once (≥ 1); more get HTTP 503.
        max_body_bytes: largest ``POST /offer`` body accepted (a browser offer is 3-10 KB).
        connect_timeout_s: a peer not connected this long after its answer is closed, which
            frees its slot (``--connect-timeout``).
        max_pending_per_client: offers from one client address answered but not connected
            yet; more get HTTP 429 (behind a reverse proxy every client is the proxy).
        read_timeout_s: longest time for an offer's body to arrive once its head has.
        stats_interval_s: how often figures go to the peer's data channel.

    Raises:
        ValueError: a limit below its minimum.
    """

    max_peers: int = 4
    max_body_bytes: int = 64 * 1024
    connect_timeout_s: float = 10.0
    max_pending_per_client: int = 2
    read_timeout_s: float = 10.0
    stats_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {self.max_peers}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.max_pending_per_client < 1:
            raise ValueError(
                f"max_pending_per_client must be at least 1, got {self.max_pending_per_client}"
            )
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("connect_timeout_s and read_timeout_s must be positive")


@dataclass(eq=False)
class Peer:
    """One browser (or other client) and everything the relay holds for it."""

    pc: RTCPeerConnection
    view: View
    remote: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    track: SharpenTrack | None = None
    channel: RTCDataChannel | None = None
    sinks: list[MediaBlackhole] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def set_view(self, view: View) -> None:
        self.view = view
        if self.track is not None:
            self.track.view = view


class Relay:
    """Answers offers and owns every peer connection until it closes.

    Args:
        processor: the model, shared by all peers (calls are serialised on one worker
            thread unless ``executor`` says otherwise).
        label: what the page shows as the model (e.g. ``"sharpcam.onnx on CPU"``), or a
            function returning it (read each time: a tier step-down changes the model).
        source: receive-only mode: a live video track every peer gets, sharpened. ``None``
            (relay mode): each peer's own video comes back sharpened.
        settings: limits, see :class:`RelaySettings`.
        executor: where frames are converted and sharpened; by default one worker thread
            owned (and shut down) by the relay.
    """

    def __init__(
        self,
        processor: FrameProcessor,
        *,
        label: str | Callable[[], str] = "",
        source: MediaStreamTrack | None = None,
        settings: RelaySettings | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.processor = processor
        self._label = label
        self.settings = settings or RelaySettings()
        self._source = source
        self._fanout = Fanout(source) if source is not None else None
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="sharpcam-model")
        self._peers: set[Peer] = set()
        self._closed = False
        #: Refusals for lack of file descriptors (shared with the HTTP site).
        self.incidents = FdIncidents()

    @property
    def label(self) -> str:
        """What the page shows as the model, now."""
        return self._label() if callable(self._label) else self._label

    def tier(self) -> dict[str, Any]:
        """``{"tier": ..., "tier_note": ...}`` of the processor now (see ``GET /config``)."""
        tier = getattr(self.processor, "tier", None)
        note = getattr(self.processor, "status_note", "")
        return {
            "tier": tier if isinstance(tier, str) else None,
            "tier_note": note if isinstance(note, str) else "",
        }

    @property
    def mode(self) -> str:
        """``"relay"`` (peers send video) or ``"receive"`` (peers watch the source)."""
        return "relay" if self._source is None else "receive"

    @property
    def peers(self) -> frozenset[Peer]:
        """The peers open now."""
        return frozenset(self._peers)

    def config(self) -> dict[str, Any]:
        """What ``GET /config`` returns."""
        return {
            "mode": self.mode,
            "model": self.label,
            "max_peers": self.settings.max_peers,
            "peers": len(self._peers),
            "scale": scale_of(self.processor),
            **self.tier(),
        }

    def pending(self, remote: str) -> int:
        """Peers of client address ``remote`` answered but not connected yet."""
        return sum(1 for p in self._peers if p.remote == remote and not p.connected.is_set())

    async def answer(
        self, offer: RTCSessionDescription, view: View, remote: str = ""
    ) -> RTCSessionDescription:
        """Open a peer connection for ``offer`` (from client address ``remote``) and return
        the complete answer.

        Raises:
            RelayFull: ``max_peers`` peers are open (or the relay is closing, or no file
                descriptor is left).
            TooManyPending: ``remote`` has ``max_pending_per_client`` unconnected offers.
            OfferError: the SDP cannot be used, or there is no video to sharpen.
        """
        if self._closed:
            raise RelayFull("the relay is shutting down")
        if len(self._peers) >= self.settings.max_peers:
            raise RelayFull(
                f"the relay already serves {len(self._peers)} peer(s), its limit; "
                "retry later or start it with a higher --max-peers"
            )
        if self.pending(remote) >= self.settings.max_pending_per_client:
            raise TooManyPending(
                f"{remote or 'this client'} already has {self.pending(remote)} offer(s) that "
                f"have not connected; wait for them (they expire after "
                f"{self.settings.connect_timeout_s:g} s)"
            )
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer = Peer(pc=pc, view=view, remote=remote)
        self._peers.add(peer)  # counts against the limit from now on
        try:
            self._wire(peer)
            try:
                await pc.setRemoteDescription(offer)
            except OSError:
                raise
            except Exception as exc:
                reason = str(exc) or "a line of it cannot be parsed"
                raise OfferError(
                    f"the SDP offer cannot be used: {reason}; send the browser's "
                    "localDescription.sdp unchanged"
                ) from exc
            if self._source is not None:
                self._add_source_track(peer)
            if peer.track is None:
                raise OfferError(
                    "the offer has no video to sharpen: add a camera track (relay mode) or a "
                    "recvonly video transceiver (when the server runs with --source)"
                )
            await pc.setLocalDescription(await pc.createAnswer())
            for sink in peer.sinks:
                await sink.start()
            peer.task = asyncio.create_task(self._supervise(peer), name=f"sharpcam-peer-{peer.id}")
        except OSError as exc:
            await self.close_peer(peer)
            if exc.errno not in FD_ERRNOS:
                raise
            self.incidents.refuse("peer connection", exc)
            raise RelayFull("the server is out of file descriptors; retry later") from exc
        except BaseException:
            await self.close_peer(peer)
            raise
        log.info("peer %s: answered (%d open)", peer.id, len(self._peers))
        return pc.localDescription

    def _wire(self, peer: Peer) -> None:
        pc = peer.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("peer %s: %s", peer.id, pc.connectionState)
            if pc.connectionState == "connected":
                peer.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                await self.close_peer(peer)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self._source is None and peer.track is None:
                peer.track = SharpenTrack(
                    track, self.processor, executor=self.executor, view=peer.view
                )
                pc.addTrack(peer.track)
            else:  # audio, extra video, or anything sent in receive mode: drain and discard
                sink = MediaBlackhole()
                sink.addTrack(track)
                peer.sinks.append(sink)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != CONTROL_CHANNEL:
                return
            peer.channel = channel

            @channel.on("message")
            def on_message(message: object) -> None:
                try:
                    peer.set_view(parse_view(message, peer.view))
                except ValueError as exc:  # bad input only answers; the peer stays
                    if channel.readyState == "open":
                        channel.send(json.dumps({"type": "error", "error": str(exc)}))

    def _add_source_track(self, peer: Peer) -> None:
        assert self._fanout is not None
        if not any(t.kind == "video" for t in peer.pc.getTransceivers()):
            return
        subscription = self._fanout.subscribe()
        peer.track = SharpenTrack(
            subscription, self.processor, executor=self.executor, view=peer.view
        )
        peer.pc.addTrack(peer.track)

    async def _supervise(self, peer: Peer) -> None:
        """Close the peer if it never connects; once it does, send figures each interval."""
        try:
            await asyncio.wait_for(peer.connected.wait(), self.settings.connect_timeout_s)
        except TimeoutError:
            log.info(
                "peer %s: not connected after %.0f s, closing",
                peer.id,
                self.settings.connect_timeout_s,
            )
            await self.close_peer(peer)
            return
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            channel, track = peer.channel, peer.track
            if channel is not None and track is not None and channel.readyState == "open":
                figures = dataclasses.asdict(track.stats())
                message = {"type": "stats", "model": self.label, **self.tier(), **figures}
                channel.send(json.dumps(message))

    async def close_peer(self, peer: Peer) -> None:
        """Close ``peer`` and free what it held (idempotent)."""
        self._peers.discard(peer)
        task, peer.task = peer.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if peer.track is not None:
            peer.track.stop()
        for sink in peer.sinks:
            await sink.stop()
        peer.sinks.clear()
        await peer.pc.close()

    async def close(self) -> int:
        """Close every peer and the worker thread; return how many peers were open."""
        self._closed = True
        peers = list(self._peers)
        await asyncio.gather(*(self.close_peer(p) for p in peers))
        if self._fanout is not None:
            await self._fanout.close()
        if self._own_executor:
            await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)
        return len(peers)


def parse_view(message: object, current: View) -> View:
    """``current`` updated from a control message ``{"sharpen": bool, "split": float}``
    (either key optional; a JSON string or an already-decoded dict).

    Raises:
        ValueError: not a JSON object, or a value of the wrong type or range.
    """
    if isinstance(message, str | bytes):
        try:
            message = loads_json(message, "control message")
        except ValueError as exc:
            raise ValueError(f'{exc}; send a JSON object like {{"split": 0.5}}') from None
    if not isinstance(message, dict):
        raise ValueError('control message must be a JSON object like {"sharpen": true}')
    sharpen = message.get("sharpen", current.sharpen)
    split = message.get("split", current.split)
    if not isinstance(sharpen, bool):
        raise ValueError(f'"sharpen" must be true or false, got {sharpen!r}')
    if isinstance(split, bool) or not isinstance(split, int | float) or not 0 <= split <= 1:
        raise ValueError(f'"split" must be a number in [0, 1], got {split!r}')
    return View(sharpen=sharpen, split=float(split))


def loads_json(text: str | bytes, what: str) -> object:
    """``json.loads``, with every failure a one-line :class:`ValueError` naming ``what``
    (JSON nested deeper than the parser's recursion limit included).

    Raises:
        ValueError: not JSON, or nested too deeply.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from exc


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=_HEADERS)


async def _offer(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    limit = relay.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"the offer body is over {limit} bytes; send only the SDP offer")
    try:
        async with asyncio.timeout(relay.settings.read_timeout_s):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"the offer body is over {limit} bytes; send only the SDP offer")
    except TimeoutError:
        return _error(408, f"the offer body did not arrive in {relay.settings.read_timeout_s:g} s")
    try:
        params = loads_json(body, "the body")
    except ValueError as exc:
        return _error(400, f'{exc}; send {{"sdp": "...", "type": "offer"}}')
    if not isinstance(params, dict):
        return _error(400, 'the body must be a JSON object: {"sdp": "...", "type": "offer"}')
    sdp, kind = params.get("sdp"), params.get("type")
    if not isinstance(sdp, str) or not sdp.strip():
        return _error(400, '"sdp" is missing or empty; send the offer\'s SDP text')
    if kind != "offer":
        return _error(400, f'"type" must be "offer", got {kind!r}')
    if not sdp.startswith("v=0"):
        return _error(
            400,
            'the SDP offer is malformed (it must start with "v=0"); send '
            "the browser's localDescription.sdp unchanged",
        )
    try:
        view = parse_view({k: params[k] for k in ("sharpen", "split") if k in params}, View())
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        answer = await relay.answer(
            RTCSessionDescription(sdp=sdp, type="offer"), view, remote=request.remote or ""
        )
    except (RelayFull, TooManyPending) as exc:
        status = 503 if isinstance(exc, RelayFull) else 429
        return web.json_response(
            {"error": str(exc)}, status=status, headers={**_HEADERS, "Retry-After": "5"}
        )
    except OfferError as exc:
        return _error(400, str(exc))
    return web.json_response({"sdp": answer.sdp, "type": answer.type}, headers=_HEADERS)


async def _config(request: web.Request) -> web.Response:
    return web.json_response(request.app[RELAY_KEY].config(), headers=_HEADERS)


def _page_handler(name: str, content_type: str) -> Any:
    body = (resources.files("sharpcam") / "static" / name).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_HEADERS)

    return handler


def create_app(relay: Relay, access: AccessPolicy | None = None) -> web.Application:
    """The aiohttp application for ``relay``, open only as ``access`` allows (default: no
    token, loopback names only); closing the app (``on_shutdown``) closes every peer
    connection and the relay's worker thread."""
    app = web.Application(
        client_max_size=relay.settings.max_body_bytes,  # read() refuses one byte more
        middlewares=[head_clock_middleware, access_middleware(access or AccessPolicy(), _HEADERS)],
    )
    app[RELAY_KEY] = relay
    for path, (name, content_type) in PAGE_FILES.items():
        app.router.add_get(path, _page_handler(name, content_type))
    app.router.add_get("/config", _config)
    app.router.add_post("/offer", _offer)

    async def on_shutdown(app: web.Application) -> None:
        await relay.close()

    app.on_shutdown.append(on_shutdown)
    return app
