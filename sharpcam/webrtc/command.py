"""The ``sharpcam serve`` command: options, start-up and messages.

Open the printed address in Chrome or Firefox: the page sends your camera to this server
over WebRTC and shows it back sharpened, split with the original under a draggable
divider. With ``--source 0`` (a webcam index) or ``--source clip.mp4`` the server streams
its own source, sharpened, to every page that connects (receive-only); with
``--upscale 2`` a ×2 model returns each page's stream twice as large.

>>> main(["--port", "8080", "--model", "models/sharpcam.onnx"])  # doctest: +SKIP

Serving is :mod:`sharpcam.webrtc.server`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sharpcam.backends import BACKEND_CHOICES
from sharpcam.errors import ModelError, SharpcamError, UsageError
from sharpcam.models import TIER_CHOICES, asked_mode
from sharpcam.webrtc.access import AccessPolicy, new_token, split_host
from sharpcam.webrtc.app import Relay, RelaySettings
from sharpcam.webrtc.limits import HttpLimits
from sharpcam.webrtc.server import serve

PROG = "sharpcam serve"

#: The page's default capture size (``client.js`` asks the camera for 640x480).
PROBE_SIZE = (640, 480)


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` → ``(1280, 720)``; an argparse type."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a frame size; give WIDTHxHEIGHT, e.g. 1280x720"
        )
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class ServeSettings:
    """What ``sharpcam serve`` was asked for.

    Args:
        host: address to listen on; loopback by default.
        port: TCP port; 0 picks a free one (the printed address names it).
        max_peers: peer connections at once (≥ 1).
        source: receive-only mode: a webcam index (``"0"``) or a video file; ``None``:
            relay mode, each page sends its own camera.
        model: one ONNX model (overrides ``tier``); ``None``: ``$SHARPCAM_MODEL``, else
            by ``tier`` from ``models/`` (``$SHARPCAM_MODELS``).
        provider: ``auto``, ``tensorrt``, ``cuda`` or ``cpu``.
        upscale: 1 (restore) or 2 (a ×2 model: each page's stream comes back twice as
            large, split against a plain upscale).
        deblock: the ``deblock`` models (full-size decoded streams: codec blocking).
        allow_hosts: more names the relay answers to (a reverse proxy's), any port.
        connect_timeout_s: an answered offer that has not connected by then frees its slot.
        max_connections: HTTP connections open at once.
        tier: ``auto`` (the best tier that holds ``fps`` on ``probe_size`` frames here),
            ``quality``, ``balanced`` or ``fast``; ``model`` overrides it.
        backend: ``auto``, ``onnxruntime`` or ``openvino``.
        fps: the frame rate the relay must hold (the tier choice and the live step-down).
        probe_size: the frame size the tiers are timed on (width, height); ``None``: the
            page's default capture size, halved for ``upscale`` 2 (the page sends half).

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
    deblock: bool = False
    allow_hosts: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    max_connections: int = 64
    tier: str = "auto"
    backend: str = "auto"
    fps: float = 30.0
    probe_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 1000:
            raise UsageError(f"--fps must be in (0, 1000], got {self.fps:g}")
        if self.probe_size is not None and min(self.probe_size) < 1:
            raise UsageError(f"--probe-size must be positive, got {self.probe_size}")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be in 0..65535, got {self.port}")
        if self.max_peers < 1:
            raise UsageError(f"--max-peers must be at least 1, got {self.max_peers}")
        if self.upscale not in (1, 2):
            raise UsageError(f"--upscale must be 1 or 2, got {self.upscale}")
        try:
            asked_mode(self.upscale, self.deblock)
        except ModelError as exc:
            raise UsageError(str(exc)) from None
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
        help="one ONNX model, overriding --tier; None: $SHARPCAM_MODEL, else by --tier from "
        "models/ ($SHARPCAM_MODELS)",
    )
    parser.add_argument(
        "--tier",
        choices=TIER_CHOICES,
        default="auto",
        help="model tier from models/ ($SHARPCAM_MODELS); auto: the best that holds --fps "
        "on --probe-size frames here (timed once, cached), stepping down a tier if the "
        "model falls behind while relaying; --model overrides it",
    )
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default="auto", help="inference backend"
    )
    parser.add_argument(
        "--provider",
        default="auto",
        choices=("auto", "tensorrt", "cuda", "cpu"),
        help="ONNX Runtime execution provider",
    )
    parser.add_argument(
        "--fps", type=float, default=30.0, help="frame rate the relay must hold (--tier auto)"
    )
    parser.add_argument(
        "--probe-size",
        type=parse_size,
        default=None,
        metavar="WxH",
        help="frame size the tiers are timed on; None: the page's capture size, 640x480 "
        "(320x240 with --upscale 2: the page sends half size)",
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
        "--deblock",
        action="store_true",
        help="the deblock models: clean the codec blocking of the pages' full-size streams "
        "(what a starved call link delivers) instead of sharpening them",
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
    # serve's verbosity governs sharpcam's own loggers too (the run command may have set
    # them, with a handler, earlier in the same process: tests do)
    logging.getLogger("sharpcam").setLevel(level)
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
        deblock=args.deblock,
        allow_hosts=tuple(args.allow_host),
        connect_timeout_s=args.connect_timeout,
        max_connections=args.max_connections,
        tier=args.tier,
        backend=args.backend,
        fps=args.fps,
        probe_size=args.probe_size,
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
    width, height = settings.probe_size or PROBE_SIZE
    if settings.probe_size is None and settings.upscale > 1:
        width, height = width // 2, height // 2  # the page sends half size to a ×2 model
    try:
        engine = open_engine(
            EngineSettings(
                model=settings.model,
                tier=settings.tier,
                backend=settings.backend,
                provider=settings.provider,
                upscale=settings.upscale,
                deblock=settings.deblock,
                stabilize=True,  # every relay track stabilizes its frames
            ),
            width=width,
            height=height,
            fps=settings.fps,
            live=True,
        )
    except BaseException:
        if source is not None:
            source.close()
        raise

    def label() -> str:  # read live: a step-down changes the model
        text = f"{engine.model_path.name} on {engine.provider}"
        return text + (f" (×{engine.scale})" if engine.scale > 1 else "")

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
                if reason := getattr(relay.processor, "reason", ""):
                    print(f"{PROG}: tier: {reason}")
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
