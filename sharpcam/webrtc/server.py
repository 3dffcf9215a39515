"""The ``sharpcam serve`` command: options, start-up and the served site.

Open the printed address in Chrome or Firefox: the page sends your camera to this server
over WebRTC and shows it back sharpened, split with the original under a draggable
divider. With ``--source 0`` (a webcam index) or ``--source clip.mp4`` the server streams
its own source, sharpened, to every page that connects (receive-only).

>>> main(["--port", "8080", "--model", "models/sharpcam.onnx"])  # doctest: +SKIP

The web side lives in :mod:`sharpcam.webrtc.app` (endpoints, peers), the frame work in
:mod:`sharpcam.webrtc.track`, the local source in :mod:`sharpcam.webrtc.source`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from sharpcam.errors import SharpcamError, UsageError
from sharpcam.webrtc.access import TOKEN_PARAM, AccessPolicy, new_token, split_host
from sharpcam.webrtc.app import Relay, RelaySettings, create_app
from sharpcam.webrtc.limits import GuardedSite, HttpLimits, install_fd_incident_handler

log = logging.getLogger(__name__)

PROG = "sharpcam serve"


class ServeError(SharpcamError):
    """The server cannot start (address in use, no permission to bind)."""


@dataclass(frozen=True)
class ServeSettings:
    """What ``sharpcam serve`` was asked for.

    Args:
        host: address to listen on; loopback by default.
        port: TCP port; 0 picks a free one (the printed address names it).
        max_peers: peer connections at once (≥ 1).
        source: receive-only mode: a webcam index (``"0"``) or a video file; ``None``:
            relay mode, each page sends its own camera.
        model: ONNX model; ``None``: the shipped default.
        provider: ``auto``, ``tensorrt``, ``cuda`` or ``cpu``.
        upscale: 1 (restore) or 2 (a ×2 model: each page's stream comes back twice as
            large, split against a plain upscale).
        allow_hosts: more names the relay answers to (a reverse proxy's), any port.
        connect_timeout_s: an answered offer that has not connected by then frees its slot.
        max_connections: HTTP connections open at once.

    Raises:
        UsageError: a value out of range, or a --host that is not a valid address.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_peers: int = 4
    source: str | None = None
    model: Path | None = None
    provider: str = "auto"
    upscale: int = 1
    allow_hosts: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    max_connections: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be in 0..65535, got {self.port}")
        if self.max_peers < 1:
            raise UsageError(f"--max-peers must be at least 1, got {self.max_peers}")
        if self.upscale not in (1, 2):
            raise UsageError(f"--upscale must be 1 or 2, got {self.upscale}")
        if not self.connect_timeout_s > 0:
            raise UsageError(f"--connect-timeout must be positive, got {self.connect_timeout_s}")
        if self.max_connections < 1:
            raise UsageError(f"--max-connections must be at least 1, got {self.max_connections}")
        if re.fullmatch(r"[\d.]+", self.host) or ":" in self.host:
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                raise UsageError(
                    f"--host {self.host} is not a valid IP address; use 127.0.0.1 (this "
                    "machine only), 0.0.0.0 (every interface) or one of this machine's addresses"
                ) from None
        for name in self.allow_hosts:
            parsed = split_host(name)
            if parsed is None or parsed[1] is not None:
                raise UsageError(
                    f"--allow-host {name!r} is not a host name; give the name alone, "
                    "without scheme or port (e.g. cam.example.org)"
                )

    @property
    def needs_token(self) -> bool:
        """Whether pages need the start-up token: the server streams its own camera or
        file (``--source``), or listens beyond loopback."""
        return self.source is not None or not self.is_loopback

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost
            return False


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sharpcam serve``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Serve the WebRTC demo page: a browser sends its camera and gets it back "
            "sharpened (relay mode), or watches this machine's --source (receive-only)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback needs the printed token and "
        "exposes the relay to the network over plain HTTP",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    parser.add_argument("--max-peers", type=int, default=4, help="peer connections served at once")
    parser.add_argument(
        "--source",
        default=None,
        help="receive-only mode: webcam index (0) or video file streamed to every page; "
        "None: relay mode (each page sends its camera)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model; None: the shipped models/sharpcam.onnx (or $SHARPCAM_MODEL)",
    )
    parser.add_argument(
        "--provider",
        default="auto",
        choices=("auto", "tensorrt", "cuda", "cpu"),
        help="ONNX Runtime execution provider",
    )
    parser.add_argument(
        "--upscale",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: a ×2 model (--model PATH, or the x2 models in models/); pages send a "
        "smaller stream and get it back twice as large, beside a plain upscale",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer to Host NAME (a reverse proxy's name); repeatable",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="an answered offer that has not connected by then is dropped, freeing its slot",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="HTTP connections open at once (more are answered 503)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: log peer events; -vv: also debug lines, including aiortc's, aioice's and "
        "aiohttp's",
    )
    return parser


#: Third-party loggers kept at WARNING below ``-vv`` (aioice alone logs every ICE check).
QUIET_LOGGERS = ("aioice", "aiortc", "aiohttp")


def configure_logging(verbosity: int) -> None:
    """Log to stderr: warnings only (0), sharpcam's peer events (1), everything at debug
    level, third-party libraries included (2 or more)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity >= 2 else logging.WARNING)


def _settings(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        host=args.host,
        port=args.port,
        max_peers=args.max_peers,
        source=args.source,
        model=args.model,
        provider=args.provider,
        upscale=args.upscale,
        allow_hosts=tuple(args.allow_host),
        connect_timeout_s=args.connect_timeout,
        max_connections=args.max_connections,
    )


@contextlib.contextmanager
def _opened(settings: ServeSettings) -> Iterator[Relay]:
    """The engine, the source (receive-only) and the relay for ``settings``."""
    from sharpcam.runtime import EngineSettings, open_engine

    # The source first: a wrong --source is reported before the model is loaded.
    source = None
    if settings.source is not None:
        from sharpcam.webrtc.source import open_source_track

        source = open_source_track(settings.source)
    try:
        engine = open_engine(
            EngineSettings(
                model=settings.model, provider=settings.provider, upscale=settings.upscale
            )
        )
    except BaseException:
        if source is not None:
            source.close()
        raise
    label = f"{engine.model_path.name} on {engine.provider}"
    if engine.scale > 1:
        label += f" (×{engine.scale})"
    try:
        relay = Relay(
            engine,
            label=label,
            source=source,
            settings=RelaySettings(
                max_peers=settings.max_peers, connect_timeout_s=settings.connect_timeout_s
            ),
        )
        yield relay
    finally:
        if source is not None:
            source.close()
        engine.close()


def main(argv: list[str] | None = None) -> int:
    """``sharpcam serve [options]``; returns the exit code (0 after Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        settings = _settings(args)
        access = AccessPolicy(
            token=new_token() if settings.needs_token else None,
            hosts=(settings.host,),
            allow_hosts=settings.allow_hosts,
        )
        with _opened(settings) as relay:

            def ready(url: str) -> None:
                if not settings.is_loopback:
                    print(
                        f"{PROG}: warning: listening on {settings.host}, not loopback: anyone "
                        "who can reach this address and has the printed address (its token) "
                        "can use the relay"
                        + (" and watch your --source" if settings.source else "")
                        + "; the traffic is plain HTTP (put an HTTPS reverse proxy in front)",
                        file=sys.stderr,
                    )
                what = (
                    f"streaming {settings.source} (receive-only)"
                    if settings.source is not None
                    else "relaying each page's camera"
                )
                print(f"{PROG}: open {url} in Chrome or Firefox ({what}; model {relay.label})")
                print(f"{PROG}: press Ctrl-C to stop", flush=True)

            limits = HttpLimits(max_connections=settings.max_connections)
            closed = asyncio.run(
                serve(
                    relay,
                    settings.host,
                    settings.port,
                    on_ready=ready,
                    access=access,
                    limits=limits,
                )
            )
    except SharpcamError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the loop took over the signal
        return 130
    print(f"{PROG}: stopped; closed {closed} peer connection(s)")
    return 0
