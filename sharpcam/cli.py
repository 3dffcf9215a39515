"""The ``sharpcam`` command: camera or file → model → virtual camera, file or preview.

``sharpcam [options]`` runs the live/file pipeline (this module); ``sharpcam enhance``,
``sharpcam bench`` and ``sharpcam serve`` dispatch to :mod:`sharpcam.enhance`,
:mod:`sharpcam.bench` and :mod:`sharpcam.webrtc` (each has ``main(argv) -> int``).

Every failure a user can fix prints one line, ``sharpcam: error: <problem>; <fix>``, and
exits non-zero (2 for bad options, 1 otherwise, 130 when a file run is interrupted).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sharpcam import __version__
from sharpcam.errors import SharpcamError, SinkError, UsageError

if TYPE_CHECKING:
    from sharpcam.runtime import EngineSettings, TieredEngine
    from sharpcam.sinks import Sink
    from sharpcam.sources import SourceInfo

log = logging.getLogger("sharpcam")

#: A source rate above this is a container's mistake, not a target for ``--tier auto``.
MAX_TARGET_FPS = 240.0

#: Subcommands: name -> (module with ``main(argv) -> int``, one-line description).
COMMANDS: dict[str, tuple[str, str]] = {
    "enhance": ("sharpcam.enhance", "sharpen one image: sharpcam enhance IN.png OUT.png"),
    "bench": ("sharpcam.bench", "time the model per provider and frame size"),
    "serve": ("sharpcam.webrtc", "WebRTC demo: sharpen a browser's camera and send it back"),
}

EPILOG = "commands (sharpcam COMMAND --help for each):\n" + "\n".join(
    f"  {name:<9}{desc}" for name, (_, desc) in COMMANDS.items()
)


# -- shared by the commands ------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Description and epilog kept as written; real defaults shown (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def make_parser(prog: str, description: str, **kwargs: object) -> argparse.ArgumentParser:
    """An argparse parser with sharpcam's help format."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=_Formatter,
        allow_abbrev=False,  # `bench --provider` must not pass for `--providers`
        **kwargs,  # type: ignore[arg-type]
    )


def add_model_options(
    parser: argparse.ArgumentParser, *, provider: bool = True, upscale: bool = False
) -> None:
    """``--model``, ``--tier``, ``--backend``, ``--provider`` (unless ``provider=False``),
    ``--upscale`` and ``--deblock`` (if ``upscale``) and ``--threads`` in a "model" group."""
    from sharpcam.backends import BACKEND_CHOICES
    from sharpcam.engine import PROVIDER_CHOICES
    from sharpcam.models import REPO_MODELS, TIER_CHOICES

    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", type=Path, default=None, metavar="PATH",
        help="one ONNX model (default: $SHARPCAM_MODEL, else by --tier from "
        f"{_short(REPO_MODELS)}/)",
    )  # fmt: skip
    if upscale:
        group.add_argument(
            "--upscale", type=int, choices=(1, 2), default=1, help="2: ×2 super-resolution"
        )
        group.add_argument(
            "--deblock", action="store_true",
            help="deblock models, for codec-blocked call video",
        )  # fmt: skip
    group.add_argument(
        "--tier", choices=TIER_CHOICES, default="auto", metavar="TIER",
        help="quality, balanced, fast, or auto: the best that holds --fps here",
    )  # fmt: skip
    group.add_argument(
        "--backend", choices=BACKEND_CHOICES, default="auto", metavar="NAME",
        help="onnxruntime, openvino or auto",
    )  # fmt: skip
    if provider:
        group.add_argument(
            "--provider", choices=PROVIDER_CHOICES, default="auto",
            help="ONNX Runtime provider; auto tries tensorrt, cuda, cpu",
        )  # fmt: skip
    group.add_argument(
        "--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)"
    )


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``-v`` / ``-q``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def setup_logging(args: argparse.Namespace) -> None:
    """Log ``sharpcam: message`` lines to stderr at the level ``-v``/``-q`` ask for."""
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.WARNING
        if getattr(args, "quiet", False)
        else logging.INFO
    )
    root = logging.getLogger("sharpcam")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("sharpcam: %(message)s"))
        root.addHandler(handler)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    """The :class:`~sharpcam.runtime.EngineSettings` the model options ask for."""
    from sharpcam.runtime import EngineSettings

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    return EngineSettings(
        model=args.model,
        tier=getattr(args, "tier", "auto"),
        backend=getattr(args, "backend", "auto"),
        provider=getattr(args, "provider", "auto"),
        threads=args.threads,
        upscale=getattr(args, "upscale", 1),
        deblock=getattr(args, "deblock", False),
        stabilize=hasattr(args, "no_stabilize") and not args.no_stabilize,
    )


def open_engine(
    args: argparse.Namespace,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    live: bool = False,
) -> TieredEngine:
    """The engine the options ask for, its tier chosen for ``width x height`` at ``fps``
    (:func:`sharpcam.runtime.open_engine`; raises ``ModelError``, ``ProviderError``)."""
    from sharpcam.runtime import open_engine as open_runtime

    return open_runtime(engine_settings(args), width=width, height=height, fps=fps, live=live)


def reports_errors(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a command's ``main``: a :class:`SharpcamError` becomes one line on stderr and
    its exit code; Ctrl-C outside a run's own handling exits 130 without a traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except SharpcamError as err:
            print(f"sharpcam: error: {err}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            print("sharpcam: interrupted", file=sys.stderr)
            return 130

    return wrapper


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- the run command ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of the default (run) command."""
    parser = make_parser(
        "sharpcam",
        "Sharpen a webcam or a video file in real time with a small ONNX model.\n"
        "  sharpcam --device 0                         webcam 0 -> virtual camera\n"
        "  sharpcam --device 0 --preview               ... in a split-view window instead\n"
        "  sharpcam --input call.mp4 --output sharp.mp4 --compare   (+ sharp.compare.png)",
        usage="sharpcam [--device N | --input FILE] [--output FILE] [--preview] [options]\n"
        "       sharpcam {enhance,bench,serve} ...",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"sharpcam {__version__}")
    src = parser.add_argument_group("input (one of)")
    src.add_argument(
        "--device", default=None, metavar="N|PATH", help="camera index or device path (default: 0)"
    )
    src.add_argument("--input", type=Path, default=None, metavar="FILE", help="a video file")
    src.add_argument("--width", type=int, default=None, metavar="PX", help="camera mode: width")
    src.add_argument("--height", type=int, default=None, metavar="PX", help="... height")
    src.add_argument("--fps", type=float, default=None, metavar="N", help="... frame rate")
    src.add_argument(
        "--list-devices", action="store_true", help="list the camera indices that open, then exit"
    )
    out = parser.add_argument_group("output (any of; default: the virtual camera for --device)")
    out.add_argument(
        "--output", type=Path, default=None, metavar="FILE",
        help="write a video file: .mp4 .mkv .mov .m4v .avi (H.264), .webm (VP9), .y4m (raw)",
    )  # fmt: skip
    out.add_argument(
        "--compare", action="append", nargs="?", const="", default=None, metavar="FILE",
        help="also write original | sharpened side by side: a picture of the middle frame "
        "with a zoomed crop (.png, .jpg; no FILE: --output's name + .compare.png), or a "
        "video of every frame (a video suffix); may be given twice",
    )  # fmt: skip
    out.add_argument(
        "--preview", action="store_true", help="split-view window (space: toggle, q: quit)"
    )
    out.add_argument(
        "--virtual-camera", action="store_true", help="also send to the virtual camera"
    )
    out.add_argument(
        "--vcam-backend", default=None, metavar="NAME",
        help="pyvirtualcam backend (default: the first that works)",
    )  # fmt: skip
    out.add_argument(
        "--vcam-device", default=None, metavar="DEV", help="virtual camera device, e.g. /dev/video2"
    )
    add_model_options(parser, upscale=True)
    run = parser.add_argument_group("run")
    run.add_argument(
        "--stats", action="store_true", help="status line every second (default: every 5 s)"
    )
    run.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="stop after N frames"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar for files")
    run.add_argument("--no-stabilize", action="store_true", help="no anti-flicker blend")
    run.add_argument(
        "--allow-partial", action="store_true",
        help="accept an input video whose end is truncated or undecodable (a warning, exit 0)",
    )  # fmt: skip
    add_log_options(run)
    return parser


@reports_errors
def run_command(argv: list[str] | None = None) -> int:
    """The default command: ``sharpcam [--device N | --input FILE] [outputs] [options]``."""
    from sharpcam import pipeline, sources

    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.list_devices:
        found = sources.list_cameras()
        print(
            "cameras that open: " + ", ".join(map(str, found))
            if found
            else f"no camera opens (probed indices {sources.PROBE_INDICES.start}-"
            f"{sources.PROBE_INDICES.stop - 1})"
        )
        return 0
    _check_options(args)
    from sharpcam.runtime import resolve_models

    resolve_models(engine_settings(args))  # a wrong model fails before the camera opens
    device = sources.parse_device(args.device) if args.device is not None else None
    if device is None and args.input is None:
        device = 0
    with sources.open_source(
        device=device, input=args.input, width=args.width, height=args.height, fps=args.fps
    ) as source:
        info = source.info
        engine = open_engine(
            args, width=info.width, height=info.height, fps=_target_fps(args, info), live=info.live
        )
        log.info(
            "%s: %dx%d @ %.3g fps -> model %s on %s",
            info.name,
            info.width,
            info.height,
            float(info.fps),
            _short(engine.model_path),
            engine.provider,
        )
        sinks = _open_sinks(args, _scaled(info, engine.scale))
        settings = pipeline.RunSettings(
            status_every=1.0 if args.stats else 5.0,
            progress=not args.no_progress and not args.quiet,
            max_frames=args.max_frames,
            stabilize=not args.no_stabilize,
        )
        complete = False
        try:
            stats = pipeline.run(source, engine, sinks, settings)
            complete = True
        except KeyboardInterrupt:
            if info.live:  # the capture loop handles it; only a late Ctrl-C lands here
                complete = True
                return 0
            print("sharpcam: interrupted", file=sys.stderr)  # each output says it is not written
            return 130
        finally:
            _close_all(sinks, complete=complete)
    log.info("summary: %s", stats.summary())
    if stats.source_lost:
        print(f"sharpcam: error: {stats.source_lost}; outputs were finished", file=sys.stderr)
        return 1
    if stats.partial:
        if args.allow_partial:
            log.warning("%s; kept what was read (--allow-partial)", stats.partial)
            return 0
        print(
            f"sharpcam: error: {stats.partial}; the outputs hold those frames — check the "
            "input, or pass --allow-partial to accept a partial input",
            file=sys.stderr,
        )
        return 1
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Contradictions and unusable values, before anything is opened."""
    from sharpcam.sinks import check_writable, pick_codec

    if args.device is not None and args.input is not None:
        raise UsageError("give either --device or --input, not both")
    for name in ("width", "height", "fps", "max_frames"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.input is not None and not (
        args.output or args.preview or args.virtual_camera or args.compare
    ):
        raise UsageError("nothing to write: add --output FILE (or --preview, or --virtual-camera)")
    if args.output is not None:
        check_writable(args.output)
        pick_codec(args.output.suffix)
        if args.input is not None and _same_file(args.input, args.output):
            raise UsageError("--output is the --input file; choose another output name")
    args.compare = _compare_paths(args)


def _compare_paths(args: argparse.Namespace) -> list[Path]:
    """The files ``--compare`` names, checked (none may be the input, the output or twice)."""
    from sharpcam.compare import compare_path

    paths = [compare_path(value, args.output) for value in args.compare or ()]
    taken = [p for p in (args.input, args.output) if p is not None]
    for path in paths:
        if any(_same_file(path, other) for other in taken):
            raise UsageError(f"--compare {path} is already an input or output; choose another name")
        taken.append(path)
    return paths


def _same_file(a: Path, b: Path) -> bool:
    from sharpcam.sinks import same_file

    return same_file(a, b)


def _target_fps(args: argparse.Namespace, info: SourceInfo) -> float | None:
    """The rate ``--tier auto`` must hold: ``--fps``, else the source's when it is
    believable (some files state thousands), else none (the best tier)."""
    if args.fps is not None:
        return float(args.fps)
    fps = float(info.fps)
    return fps if 0 < fps <= MAX_TARGET_FPS else None


def _scaled(info: SourceInfo, scale: int) -> SourceInfo:
    """What the sinks get: the source's description at the model's output size."""
    if scale == 1:
        return info
    return dataclasses.replace(info, width=info.width * scale, height=info.height * scale)


def _open_sinks(args: argparse.Namespace, info: SourceInfo) -> list[Sink]:
    """The sinks the options ask for; the virtual camera by default for a camera."""
    from sharpcam import sinks as sink_kinds

    opened: list[Sink] = []
    want_vcam = args.virtual_camera or (info.live and not args.output and not args.preview)
    try:
        if args.output is not None:
            opened.append(sink_kinds.FileSink.for_source(args.output, info))
        if args.compare:
            from sharpcam.compare import open_compare

            frames = info.frames
            if args.max_frames is not None:
                frames = min(frames, args.max_frames) if frames else args.max_frames
            opened += [open_compare(path, info, frames=frames) for path in args.compare]
        if want_vcam:
            opened.append(
                sink_kinds.VirtualCameraSink(
                    info.width,
                    info.height,
                    float(info.fps),
                    backend=args.vcam_backend,
                    device=args.vcam_device,
                    pace=not info.live,
                )
            )
        if args.preview:
            opened.append(sink_kinds.PreviewSink())
    except BaseException:
        _close_all(opened, complete=False)
        raise
    return opened


def _close_all(sinks: list[Sink], *, complete: bool) -> None:
    """Close every sink; the first error is raised after all were closed."""
    first: BaseException | None = None
    for sink in sinks:
        try:
            sink.close(complete=complete)
        except BaseException as exc:  # each sink must get its close
            first = first or exc
    if first is not None:
        if isinstance(first, SharpcamError):
            raise first
        raise SinkError(f"closing the outputs failed: {first}") from first


# -- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``sharpcam``: the run command, or a subcommand named first (``enhance``, ``bench``,
    ``serve``), which gets the remaining arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return dispatch(args[0], args[1:])
    return run_command(args)


def dispatch(name: str, argv: list[str]) -> int:
    """Run subcommand ``name``'s ``main(argv)``; its module is imported only now, so the
    runtime works without the optional ones (``serve`` needs :mod:`sharpcam.webrtc`)."""
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(
            f"sharpcam: error: `sharpcam {name}` needs {module_name}, which is not in this "
            "installation; update sharpcam",
            file=sys.stderr,
        )
        return 1
    return int(module.main(argv))


if __name__ == "__main__":
    sys.exit(main())
