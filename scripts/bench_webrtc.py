"""Benchmark the WebRTC relay from the page's point of view: end-to-end latency, fps, and
where the server's time goes (decode, model, conversions, VP8/H.264 encode).

A headless Chromium (Debian's, ``/usr/bin/chromium``) opens the real demo page; its camera
is replaced by a canvas that plays a real clip and burns a frame number into each frame
(16 black/white blocks along the top). The relay sends the frames back through the model
(``split=0``: the whole frame sharpened); the page reads the number back from every frame
it presents, so

    latency = time the frame was presented - time it was drawn on the canvas ("captured")

covers the page's encoder, the network (loopback), the server's decode, model and encode,
the page's jitter buffer, decoder and compositor. Server stages are timed in-process by
wrapping aiortc's codec classes and the engine (benchmark instrumentation only).

    .venv/bin/python scripts/bench_webrtc.py                        # shipped model
    .venv/bin/python scripts/bench_webrtc.py --sizes 640x480 --codecs VP8 --seconds 10

If ``models/sharpcam.onnx`` does not exist yet, a stand-in of the same contract and cost
is exported (an untrained ensemble of two default residual students, via
``training.export``; needs torch) and the output says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sharpcam.contract import default_model_path  # noqa: E402
from sharpcam.engine import Engine  # noqa: E402
from sharpcam.webrtc import BackgroundServer  # noqa: E402
from sharpcam.webrtc.app import Relay, RelaySettings  # noqa: E402
from sharpcam.webrtc.track import SharpenTrack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DEFAULT_CLIP = (
    REPO.parent / "shared" / "data" / "video" / "openh264_zhling_webcam_1280x720_25fps.mp4"
)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

# --- server-side timings ------------------------------------------------------------------


class Timings:
    """Per-stage lists of milliseconds, appended from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ms: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.ms[stage].append(ms)

    def reset(self) -> None:
        with self._lock:
            self.ms = defaultdict(list)

    def snapshot(self) -> dict[str, list[float]]:
        with self._lock:
            return {k: list(v) for k, v in self.ms.items()}


TIMINGS = Timings()


def _timed(cls: type, method: str, stage: str) -> None:
    original = getattr(cls, method)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            TIMINGS.add(stage, (time.perf_counter() - start) * 1000.0)

    setattr(cls, method, wrapper)


def instrument() -> None:
    """Time aiortc's VP8/H.264 encoders and decoders and the relay's frame job."""
    from aiortc.codecs.h264 import H264Decoder, H264Encoder
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder

    _timed(Vp8Encoder, "encode", "encode")
    _timed(H264Encoder, "encode", "encode")
    _timed(Vp8Decoder, "decode", "decode")
    _timed(H264Decoder, "decode", "decode")
    _timed(SharpenTrack, "_render", "frame job")


class TimedEngine:
    """The engine, recording its whole call and ONNX Runtime's share of it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def process(self, frame: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.engine.process(frame)
        TIMINGS.add("model call", (time.perf_counter() - start) * 1000.0)
        TIMINGS.add("model (ORT run)", self.engine.last_ms)
        return out


# --- the page's side ------------------------------------------------------------------------

#: Replaces the camera with a canvas playing the clip (or a moving pattern), with the frame
#: number burned in, and records every presented remote frame's number and time.
INIT_JS = r"""
(() => {
  const cfg = __BENCH__;
  const BLOCK = 24, BITS = 16;
  window.bench = { sent: new Map(), latencies: [], presented: 0, codes: 0, source: "" };
  const draw16 = (ctx, n) => {
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, BLOCK, BLOCK);        // white reference
    ctx.fillStyle = "#000"; ctx.fillRect(BLOCK, 0, BLOCK, BLOCK);    // black reference
    for (let i = 0; i < BITS; i++) {
      ctx.fillStyle = (n >> i) & 1 ? "#fff" : "#000";
      ctx.fillRect((i + 2) * BLOCK, 0, BLOCK, BLOCK);
    }
  };
  navigator.mediaDevices.getUserMedia = async () => {
    const canvas = document.createElement("canvas");
    canvas.width = cfg.width; canvas.height = cfg.height;
    const ctx = canvas.getContext("2d");
    let clip = null;
    if (cfg.clip) {
      clip = document.createElement("video");
      clip.muted = true; clip.loop = true; clip.src = cfg.clip;
      try { await clip.play(); window.bench.source = "clip"; }
      catch (e) { clip = null; }
    }
    if (!clip) window.bench.source = "pattern";
    const stream = canvas.captureStream(0);
    const track = stream.getVideoTracks()[0];
    let n = 0;
    setInterval(() => {
      n = (n + 1) & 0xffff;
      if (clip) ctx.drawImage(clip, 0, 0, cfg.width, cfg.height);
      else {
        const t = n / cfg.fps;
        ctx.fillStyle = "#678"; ctx.fillRect(0, 0, cfg.width, cfg.height);
        ctx.fillStyle = "#e94"; ctx.fillRect((t * 200) % cfg.width, cfg.height / 3, 160, 160);
      }
      draw16(ctx, n);
      window.bench.sent.set(n, performance.now());
      track.requestFrame();
    }, 1000 / cfg.fps);
    return stream;
  };
  const read = document.createElement("canvas");
  const rctx = read.getContext("2d", { willReadFrequently: true });
  const watch = () => {
    const video = document.getElementById("remote");
    if (!video) { setTimeout(watch, 50); return; }
    const onFrame = (now, meta) => {
      const w = video.videoWidth, h = video.videoHeight, sx = w / cfg.width;
      if (w && h) {
        read.width = Math.ceil((BITS + 2) * BLOCK * sx); read.height = Math.ceil(BLOCK * sx);
        rctx.drawImage(video, 0, 0, read.width, read.height, 0, 0, read.width, read.height);
        const px = rctx.getImageData(0, 0, read.width, read.height).data;
        const at = (i) => {
          const x = Math.floor((i + 0.5) * BLOCK * sx), y = Math.floor(0.5 * BLOCK * sx);
          const o = (y * read.width + x) * 4;
          return (px[o] + px[o + 1] + px[o + 2]) / 3;
        };
        const white = at(0), black = at(1), mid = (white + black) / 2;
        if (white - black > 100) {
          let n = 0;
          for (let i = 0; i < BITS; i++) if (at(i + 2) > mid) n |= 1 << i;
          const sent = window.bench.sent.get(n);
          if (sent !== undefined) {
            window.bench.latencies.push(meta.expectedDisplayTime - sent);
            window.bench.sent.delete(n);
            window.bench.codes += 1;
          }
        }
        window.bench.presented += 1;
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  document.addEventListener("DOMContentLoaded", watch);
})();
"""

PAGE_STATS_JS = """async () => {
  const pc = window.benchPc;
  const out = {};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.inbound = s;
    if (s.type === 'outbound-rtp' && s.kind === 'video') out.outbound = s;
  });
  return JSON.parse(JSON.stringify(out));
}"""

#: Keeps a handle on the page's RTCPeerConnection for getStats (the page does not expose it).
PC_HOOK_JS = """
(() => {
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.benchPc = pc;
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})();
"""


@dataclass
class Result:
    size: str
    codec: str
    sharpen: bool
    source: str
    seconds: float
    fps_page: float
    latency: list[float]
    server: dict[str, list[float]]
    page_encode_ms: float | None
    page_decode_ms: float | None
    page_jitter_ms: float | None
    quality_limitation: str
    dropped: int
    frames_sent: int


def median_p95(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.median(values), float(np.percentile(values, 95))


def delta_ms(a: dict, b: dict, total: str, count: str) -> float | None:
    try:
        n = b[count] - a[count]
        return (b[total] - a[total]) / n * 1000.0 if n > 0 else None
    except (KeyError, TypeError):
        return None


def run_one(
    browser: Any,
    engine: Engine,
    size: tuple[int, int],
    codec: str,
    sharpen: bool,
    args: argparse.Namespace,
) -> Result:
    width, height = size
    relay = Relay(
        TimedEngine(engine), label=engine.model_path.name, settings=RelaySettings(max_peers=1)
    )
    clip_url = "/bench-clip.mp4" if args.clip and args.clip.exists() else ""
    with BackgroundServer(relay) as server:
        context = browser.new_context()
        config = {"width": width, "height": height, "fps": args.fps, "clip": clip_url}
        context.add_init_script(PC_HOOK_JS)
        context.add_init_script(INIT_JS.replace("__BENCH__", json.dumps(config)))
        if clip_url:
            clip_bytes = args.clip.read_bytes()
            context.route(
                "**/bench-clip.mp4",
                lambda route: route.fulfill(body=clip_bytes, content_type="video/mp4"),
            )
        page = context.new_page()
        page.goto(
            f"{server.url}?split=0&codec={codec}&width={width}&height={height}"
            f"&sharpen={int(sharpen)}"
        )
        deadline = time.monotonic() + 60
        while page.text_content("#status") != "connected":
            if time.monotonic() > deadline:
                raise RuntimeError(f"page did not connect: {page.text_content('#status')}")
            time.sleep(0.1)
        time.sleep(args.warmup)
        # measurement window
        TIMINGS.reset()
        page.evaluate("() => { window.bench.latencies = []; window.bench.codes = 0; }")
        stats0 = page.evaluate(PAGE_STATS_JS)
        track0 = server.call(lambda: next(iter(relay.peers)).track.stats())
        start = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - start
        bench = page.evaluate(
            "() => ({latencies: window.bench.latencies, "
            "codes: window.bench.codes, source: window.bench.source})"
        )
        stats1 = page.evaluate(PAGE_STATS_JS)
        track1 = server.call(lambda: next(iter(relay.peers)).track.stats())
        server_ms = TIMINGS.snapshot()
        inbound0, inbound1 = stats0.get("inbound", {}), stats1.get("inbound", {})
        outbound0, outbound1 = stats0.get("outbound", {}), stats1.get("outbound", {})
        result = Result(
            size=f"{width}x{height}",
            codec=codec,
            sharpen=sharpen,
            source=bench["source"],
            seconds=elapsed,
            fps_page=bench["codes"] / elapsed,
            latency=bench["latencies"],
            server=server_ms,
            page_encode_ms=delta_ms(outbound0, outbound1, "totalEncodeTime", "framesEncoded"),
            page_decode_ms=delta_ms(inbound0, inbound1, "totalDecodeTime", "framesDecoded"),
            page_jitter_ms=delta_ms(
                inbound0, inbound1, "jitterBufferDelay", "jitterBufferEmittedCount"
            ),
            quality_limitation=str(outbound1.get("qualityLimitationReason", "?")),
            dropped=track1.dropped - track0.dropped,
            frames_sent=(outbound1.get("framesEncoded", 0) - outbound0.get("framesEncoded", 0)),
        )
        context.close()
    return result


def model_alone(engine: Engine, size: tuple[int, int], calls: int = 12) -> tuple[float, float]:
    """Median and p95 ms of ``engine.process`` on a random frame, nothing else running."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    engine.process(frame)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        engine.process(frame)
        times.append((time.perf_counter() - start) * 1000.0)
    return median_p95(times)


def report(results: list[Result], model_note: str, cores: int, alone: dict[str, tuple]) -> None:
    print(f"\nmodel: {model_note}; CPU cores: {cores}; browser and server share them")
    for size, (m, p) in alone.items():
        print(f"model alone at {size} (no browser running): median {m:.1f} ms, p95 {p:.1f} ms")
    print(
        "latency = canvas capture -> frame presented on the page (ms); stage columns are "
        "server medians (ms/frame); pg = the page's encoder/decoder/jitter buffer"
    )
    head = (
        f"{'size':>9} {'codec':>5} {'sharpen':>7} {'page fps':>8} {'lat med':>7} {'lat p95':>7} "
        f"{'decode':>6} {'model':>6} {'(ORT)':>6} {'convert':>7} {'encode':>6} "
        f"{'enc/model':>9} {'pg enc':>6} {'pg dec':>6} {'jitter':>6} {'dropped':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        lat_med, lat_p95 = median_p95(r.latency)
        med = {k: statistics.median(v) if v else float("nan") for k, v in r.server.items()}
        convert = med.get("frame job", float("nan")) - med.get("model call", 0.0)
        enc, model = med.get("encode", float("nan")), med.get("model call", float("nan"))
        print(
            f"{r.size:>9} {r.codec:>5} {'on' if r.sharpen else 'off':>7} {r.fps_page:8.1f} "
            f"{lat_med:7.0f} {lat_p95:7.0f} "
            f"{med.get('decode', float('nan')):6.1f} {model:6.1f} "
            f"{med.get('model (ORT run)', float('nan')):6.1f} {convert:7.1f} {enc:6.1f} "
            f"{enc / model if model else float('nan'):9.2f} "
            f"{r.page_encode_ms or float('nan'):6.1f} {r.page_decode_ms or float('nan'):6.1f} "
            f"{r.page_jitter_ms or float('nan'):6.1f} {r.dropped:7d}"
        )
    print("\nserver stages per frame, median / p95 ms (share of the server's per-frame work):")
    for r in results:
        parts = []
        totals = {k: sum(v) for k, v in r.server.items()}
        work = sum(totals.get(k, 0.0) for k in ("decode", "frame job", "encode"))
        for stage in ("decode", "model call", "model (ORT run)", "frame job", "encode"):
            values = r.server.get(stage, [])
            m, p = median_p95(values)
            share = totals.get(stage, 0.0) / work * 100 if work else float("nan")
            parts.append(f"{stage} {m:.1f}/{p:.1f} ({share:.0f}%)")
        print(f"  {r.size} {r.codec} sharpen {'on' if r.sharpen else 'off'}: " + "; ".join(parts))
        print(
            f"    page source: {r.source}; frames the page encoded {r.frames_sent}, "
            f"got back {len(r.latency)} in {r.seconds:.0f} s; page encoder limited by: "
            f"{r.quality_limitation}"
        )


def stand_in_model(folder: Path) -> Path:
    """An untrained ensemble of two default residual students, exported like the real one."""
    import torch

    from training.export import export_model
    from training.students import Ensemble, ResidualStudent

    torch.manual_seed(0)
    model = Ensemble([ResidualStudent(), ResidualStudent()])
    path = folder / "stand-in.onnx"
    export_model(model, path, metadata={"sharpcam.note": "benchmark stand-in, untrained"})
    return path


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model (default: the shipped one, else a stand-in)",
    )
    parser.add_argument("--provider", default="auto")
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--codecs", default="VP8,H264")
    parser.add_argument("--fps", type=int, default=25, help="the page's capture rate")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured per run")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the runs with sharpening off (the relay's own cost)",
    )
    parser.add_argument(
        "--clip",
        type=Path,
        default=DEFAULT_CLIP,
        help="video the page's fake camera plays (a pattern if absent)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model_path()
        if model.exists():
            note = str(model)
        else:
            print(
                f"{model} does not exist: exporting a stand-in of the same contract...", flush=True
            )
            model = stand_in_model(Path(tmp))
            note = "STAND-IN (untrained ensemble of 2 ResidualStudent(width=48, depth=4))"
        engine = Engine(model, provider=args.provider)
        note += f" on {engine.provider}"
        sizes = [parse_size(t) for t in args.sizes.split(",")]
        alone = {f"{w}x{h}": model_alone(engine, (w, h)) for w, h in sizes}
        instrument()
        results = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                for size in sizes:
                    for codec in args.codecs.split(","):
                        for sharpen in (True, False) if not args.no_baseline else (True,):
                            print(f"running {size} {codec} sharpen={sharpen} ...", flush=True)
                            results.append(run_one(browser, engine, size, codec, sharpen, args))
            finally:
                browser.close()
    from sharpcam.engine import cpu_count

    print("command: " + " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]))
    report(results, note, cpu_count(), alone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
