"""Serving the relay: the bounded, access-checked site, the run loop, and a background
server for tests, benchmarks and notebooks.

The command itself (options, start-up messages) is :mod:`sharpcam.webrtc.command`; the
web side :mod:`sharpcam.webrtc.app` (endpoints, peers), who may use it
:mod:`sharpcam.webrtc.access`, HTTP bounds :mod:`sharpcam.webrtc.limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

from aiohttp import web

from sharpcam.errors import SharpcamError
from sharpcam.webrtc.access import TOKEN_PARAM, AccessPolicy
from sharpcam.webrtc.app import Relay, create_app
from sharpcam.webrtc.limits import GuardedSite, HttpLimits, install_fd_incident_handler

log = logging.getLogger(__name__)


class ServeError(SharpcamError):
    """The server cannot start (address in use, no permission to bind)."""


def url_for(host: str, port: int, token: str | None = None) -> str:
    """``http://host:port/`` (plus ``?token=...`` when there is one) with IPv6 literals
    bracketed and wildcard hosts shown as loopback (``0.0.0.0`` cannot be opened in a
    browser)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    query = f"?{TOKEN_PARAM}={token}" if token else ""
    return f"http://{shown}:{port}/{query}"


def _bind_error(host: str, port: int, exc: OSError) -> ServeError:
    """The one-line reason ``host:port`` cannot be bound, with what to change."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        reason = exc.strerror or str(exc)
    else:
        reason = os.strerror(exc.errno)
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        text = (
            f"cannot listen on --host {host} ({reason}): it is not an address of this "
            "machine; use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or an "
            "address `ip addr` lists"
        )
    elif exc.errno == errno.EACCES:
        text = f"cannot listen on {host}:{port} ({reason}); pick a --port from 1024 up"
    else:
        text = (
            f"cannot listen on {host}:{port} ({reason}); pick another --port (or stop what uses it)"
        )
    return ServeError(text)


async def start_site(
    relay: Relay,
    host: str,
    port: int,
    *,
    access: AccessPolicy | None = None,
    limits: HttpLimits | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the relay's web app on ``host:port``, open as ``access`` allows and bounded
    by ``limits``; return the runner and the bound port.

    Raises:
        ServeError: the address cannot be bound.
    """
    limits = limits or HttpLimits()
    handler_kwargs = {"access_log": None, "keepalive_timeout": limits.keepalive_s}
    runner = web.AppRunner(create_app(relay, access), handle_signals=False, **handler_kwargs)
    await runner.setup()
    site = GuardedSite(
        runner,
        host,
        port,
        limits=limits,
        handler_kwargs=handler_kwargs,
        incidents=relay.incidents,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise _bind_error(host, port, exc) from exc
    return runner, site.bound_port


async def serve(
    relay: Relay,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    access: AccessPolicy | None = None,
    limits: HttpLimits | None = None,
) -> int:
    """Run the relay until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is ``None``);
    then close every peer connection. Returns how many peers were open at the end.
    ``on_ready`` gets the page's address (with the token, if ``access`` has one).

    Raises:
        ServeError: the address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    install_fd_incident_handler(loop, relay.incidents)
    runner, bound = await start_site(relay, host, port, access=access, limits=limits)
    if own_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, threads
                loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(url_for(host, bound, access.token if access else None))
        await stop.wait()
    finally:
        closed = await relay.close()
        await runner.cleanup()
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
    return closed


class BackgroundServer:
    """A relay served from a background thread with its own event loop (for tests,
    benchmarks and notebooks); a context manager.

    >>> with BackgroundServer(Relay(processor)) as server:   # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:41234/

    Args:
        relay: the relay to serve; it is closed when the server stops.
        host, port: where to listen (port 0: a free one).
        access, limits: see :func:`start_site`; ``url`` carries ``access``'s token.

    Raises:
        ServeError: from ``__enter__``, when the address cannot be bound.
    """

    def __init__(
        self,
        relay: Relay,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access: AccessPolicy | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.relay = relay
        self.host, self.port = host, port
        self.access, self.limits = access, limits
        self.url = ""
        self.closed_peers = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="sharpcam-serve", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(url: str) -> None:
                self.url = url
                self._ready.set()

            self.closed_peers = await serve(
                self.relay,
                self.host,
                self.port,
                stop=self._stop,
                on_ready=ready,
                access=self.access,
                limits=self.limits,
            )

        try:
            asyncio.run(main())  # like the command: leftover tasks are cancelled at the end
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def call(self, factory: Callable[[], object], timeout: float = 30.0) -> object:
        """Run ``factory()`` (a coroutine function or a plain function) on the server's
        loop and return its result."""

        async def run() -> object:
            result = factory()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        if self.loop is None:
            raise RuntimeError("the server is not running")
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
