"""Bounds on what HTTP clients can hold: connections, time to send a request head, and
what happens when the process runs out of file descriptors.

aiohttp closes idle keep-alive connections (``keepalive_s`` here) but gives a client that
sends its request head one byte at a time all the time it wants. :class:`GuardedSite`
serves the app through :class:`GuardedHandler`, aiohttp's own protocol with three
additions:

* at most ``max_connections`` open at once: one more is answered ``503`` and closed;
* a request head (request line and headers) must arrive within ``header_timeout_s`` of its
  first byte (or of the connection's start): otherwise ``408`` and the connection closes.
  The clock stops when the app sees the request (:func:`head_received`) and starts again
  with the next request's first byte; bodies are bounded by the handler that reads them;
* running out of file descriptors (``accept()`` failing with ``EMFILE``) logs one line per
  incident (refusals less than 10 s apart), not a traceback per attempt
  (:func:`install_fd_incident_handler`); asyncio retries accepting each second by itself,
  so the server answers again once descriptors are free.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: errno values meaning "out of file descriptors (or buffers)".
FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_CLOSE = b"Connection: close\r\nContent-Length: 0\r\n\r\n"
_FULL = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n" + _CLOSE
_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\n" + _CLOSE


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the relay's HTTP server.

    Args:
        max_connections: HTTP connections open at once; more get 503 (a page opens ~6).
        header_timeout_s: longest time to send a request head.
        keepalive_s: an idle keep-alive connection is closed after this long.
        backlog: connections the kernel queues before ``accept()``.

    Raises:
        ValueError: a bound below its minimum.
    """

    max_connections: int = 64
    header_timeout_s: float = 10.0
    keepalive_s: float = 15.0
    backlog: int = 64

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        if self.header_timeout_s <= 0 or self.keepalive_s <= 0:
            raise ValueError("timeouts must be positive")


class FdIncidents:
    """Counts refusals for lack of file descriptors and logs one warning line per incident:
    refusals less than ``quiet_s`` apart belong to the same incident."""

    def __init__(self, quiet_s: float = 10.0) -> None:
        self.quiet_s = quiet_s
        self.refused = 0
        self.incidents = 0
        self._last: float | None = None

    def refuse(self, what: str, exc: OSError) -> None:
        now = time.monotonic()
        self.refused += 1
        if self._last is None or now - self._last > self.quiet_s:
            self.incidents += 1
            log.warning(
                "out of file descriptors (%s: %s): refusing connections until some close; "
                "raise the limit (ulimit -n) or lower --max-peers",
                what,
                exc.strerror or exc,
            )
        self._last = now


def install_fd_incident_handler(loop: asyncio.AbstractEventLoop, incidents: FdIncidents) -> None:
    """Route the loop's "out of file descriptors" errors to ``incidents`` (one line per
    incident); every other error goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in FD_ERRNOS:
            incidents.refuse("accept", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class GuardedHandler(web.RequestHandler):
    """aiohttp's request handler with a connection cap and a request-head deadline."""

    def __init__(self, site: GuardedSite, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), **kwargs)
        self._site = site
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._state = "head"  # "head": a request head is due; "busy": in the app; "idle"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site = self._site
        if site.open_connections >= site.limits.max_connections:
            self._refused = True
            assert isinstance(transport, asyncio.Transport)
            transport.write(_FULL)
            transport.close()
            site.refused_full += 1
            return
        site.open_connections += 1
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._site.open_connections -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._state == "idle" and data:  # the first bytes of the next request
            self._state = "head"
            self._arm()
        super().data_received(data)

    def head_received(self) -> None:
        """The app has the request: stop the head clock until the next request."""
        self._state = "busy"
        self._disarm()

    def request_done(self) -> None:
        """The app answered; the next request's head gets its own deadline."""
        self._state = "idle"

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._site.limits.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self._state == "head" and self.transport is not None:
            self._site.cut_slow += 1
            self.transport.write(_TOO_SLOW)
            self.force_close()


@web.middleware
async def head_clock_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tell a :class:`GuardedHandler` when its request reached the app and when it is done."""
    protocol = request.protocol
    guarded = protocol if isinstance(protocol, GuardedHandler) else None
    if guarded is not None:
        guarded.head_received()
    try:
        return await handler(request)
    finally:
        if guarded is not None:
            guarded.request_done()


class GuardedSite(web.BaseSite):
    """A TCP site like :class:`aiohttp.web.TCPSite` whose connections are
    :class:`GuardedHandler` s, bounded by ``limits``.

    Attributes:
        open_connections: connections open now.
        refused_full: connections refused because ``max_connections`` were open.
        cut_slow: connections closed for a request head slower than the deadline.
        incidents: the out-of-file-descriptor incidents (see :class:`FdIncidents`).
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        limits: HttpLimits,
        handler_kwargs: dict[str, Any],
        incidents: FdIncidents | None = None,
    ) -> None:
        super().__init__(runner, backlog=limits.backlog)
        self._host, self._port = host, port
        self.limits = limits
        self._handler_kwargs = handler_kwargs
        self.incidents = incidents or FdIncidents()
        self.open_connections = 0
        self.refused_full = 0
        self.cut_slow = 0
        self.bound_port = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port or self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None
        server = await loop.create_server(
            lambda: GuardedHandler(self, manager, **self._handler_kwargs),
            self._host,
            self._port,
            backlog=self._backlog,
        )
        self._server = server
        self.bound_port = server.sockets[0].getsockname()[1] if server.sockets else self._port
