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
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from sharpcam.errors import SharpcamError, UsageError
from sharpcam.webrtc.app import Relay, RelaySettings, create_app

log = logging.getLogger(__name__)

PROG = "sharpcam serve"


class ServeError(SharpcamError):
    """The server cannot start (address in use, no permission to bind)."""


@dataclass(frozen=True)
class ServeSettings:
    """What ``sharpcam serve`` was asked for.

    Args:
        host: address to listen on; loopback by default (the page has no authentication).
        port: TCP port; 0 picks a free one (the printed address names it).
        max_peers: peer connections at once (≥ 1).
        source: receive-only mode: a webcam index (``"0"``) or a video file; ``None``:
            relay mode, each page sends its own camera.
        model: ONNX model; ``None``: the shipped default.
        provider: ``auto``, ``tensorrt``, ``cuda`` or ``cpu``.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_peers: int = 4
    source: str | None = None
    model: Path | None = None
    provider: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be in 0..65535, got {self.port}")
        if self.max_peers < 1:
            raise UsageError(f"--max-peers must be at least 1, got {self.max_peers}")

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost
            return False


def url_for(host: str, port: int) -> str:
    """``http://host:port/`` with IPv6 literals bracketed and wildcard hosts shown as
    loopback (``0.0.0.0`` cannot be opened in a browser)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


async def start_site(relay: Relay, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the relay's web app on ``host:port``; return the runner and the bound port.

    Raises:
        ServeError: the address cannot be bound.
    """
    runner = web.AppRunner(create_app(relay), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServeError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pick another --port (or stop what uses it)"
        ) from exc
    return runner, runner.addresses[0][1]


async def serve(
    relay: Relay,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run the relay until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is ``None``);
    then close every peer connection. Returns how many peers were open at the end.

    Raises:
        ServeError: the address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    runner, bound = await start_site(relay, host, port)
    if own_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, threads
                loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(url_for(host, bound))
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

    Raises:
        ServeError: from ``__enter__``, when the address cannot be bound.
    """

    def __init__(self, relay: Relay, host: str = "127.0.0.1", port: int = 0) -> None:
        self.relay = relay
        self.host, self.port = host, port
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
                self.relay, self.host, self.port, stop=self._stop, on_ready=ready
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
        help="address to listen on; anything but loopback exposes an unauthenticated page",
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
    )


@contextlib.contextmanager
def _opened(settings: ServeSettings) -> Iterator[Relay]:
    """The engine, the source (receive-only) and the relay for ``settings``."""
    from sharpcam.engine import Engine

    # The source first: a wrong --source is reported before the model is loaded.
    source = None
    if settings.source is not None:
        from sharpcam.webrtc.source import open_source_track

        source = open_source_track(settings.source)
    try:
        engine = Engine(settings.model, provider=settings.provider)
    except BaseException:
        if source is not None:
            source.close()
        raise
    label = f"{engine.model_path.name} on {engine.provider}"
    try:
        relay = Relay(
            engine,
            label=label,
            source=source,
            settings=RelaySettings(max_peers=settings.max_peers),
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
        if not settings.is_loopback:
            print(
                f"{PROG}: warning: listening on {settings.host}, not loopback: anyone who can "
                "reach this address can use the relay (the page has no authentication"
                + (", and they can watch your --source)" if settings.source else ")"),
                file=sys.stderr,
            )
        with _opened(settings) as relay:

            def ready(url: str) -> None:
                what = (
                    f"streaming {settings.source} (receive-only)"
                    if settings.source is not None
                    else "relaying each page's camera"
                )
                print(f"{PROG}: open {url} in Chrome or Firefox ({what}; model {relay.label})")
                print(f"{PROG}: press Ctrl-C to stop", flush=True)

            closed = asyncio.run(serve(relay, settings.host, settings.port, on_ready=ready))
    except SharpcamError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the loop took over the signal
        return 130
    print(f"{PROG}: stopped; closed {closed} peer connection(s)")
    return 0
