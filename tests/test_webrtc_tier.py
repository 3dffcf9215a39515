"""The relay chooses its model tier like the run command: ``sharpcam serve --tier auto``
picks, from a models folder of real (tiny) ONNX tiers and made-up probe timings in the
cache, the best tier that holds ``--fps``; ``/config`` and the page's figures say which;
a sustained overrun while relaying steps down to the next tier, and says so."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from pathlib import Path

import aiohttp
import numpy as np
import pytest

pytest.register_assert_rewrite("conftest_browser")

from conftest_browser import (  # noqa: E402
    COLOUR,
    INVERTED_COLOUR,
    ColourTrack,
    connect,
    make_relay,
    mean_rgb,
    relay_server,
    split_token,
    wait_until,
    write_invert_model,
)
from helpers_models import set_metadata, unsharp_model  # noqa: E402

from sharpcam.engine import Engine  # noqa: E402
from sharpcam.probe import ProbeCache  # noqa: E402
from sharpcam.runtime import TieredEngine  # noqa: E402
from sharpcam.webrtc import ServeSettings  # noqa: E402
from sharpcam.webrtc.app import Relay, RelaySettings  # noqa: E402
from sharpcam.webrtc.command import _opened, build_parser, main  # noqa: E402

pytest_plugins = ["conftest_browser"]

SIZE = (160, 120)  # the probe size the tests ask for


@pytest.fixture
def tiers(tmp_path: Path) -> dict[str, Path]:
    """A models folder: ``quality`` inverts the colours (unmistakable in a relayed frame),
    ``fast`` is a mild unsharp mask (a solid colour comes back as it went)."""
    folder = tmp_path / "models"
    folder.mkdir()
    quality = set_metadata(write_invert_model(folder / "q.onnx"), tier="quality", mode="restore")
    fast = set_metadata(unsharp_model(folder / "f.onnx"), tier="fast", mode="restore")
    return {"folder": folder, "quality": quality, "fast": fast}


def fake_probes(cache: Path, tiers: dict[str, Path], **ms: float) -> None:
    """Put made-up model times (ms per ``SIZE`` frame on ONNX Runtime's CPU) in the probe
    cache, so the start-up takes them instead of timing the models."""
    with Engine(tiers["quality"], provider="cpu") as engine:
        backend = engine.describe()
    probes = ProbeCache(cache)
    for tier, value in ms.items():
        probes.put(tiers[tier], backend, *SIZE, value)


def settings(tiers: dict[str, Path], **kw: object) -> ServeSettings:
    return ServeSettings(
        port=0, provider="cpu", backend="onnxruntime", probe_size=SIZE, fps=30.0, **kw
    )


@pytest.fixture
def env(tiers: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SHARPCAM_MODELS", str(tiers["folder"]))
    monkeypatch.setenv("SHARPCAM_CACHE", str(cache))
    monkeypatch.delenv("SHARPCAM_MODEL", raising=False)
    # the relay adds the stabilizer's time to each probe; fixed here, so the figures are exact
    monkeypatch.setattr("sharpcam.runtime.blend_ms", lambda *_a, **_k: BLEND_MS)
    return cache


#: The stabilizer time the ``env`` fixture makes the relay measure.
BLEND_MS = 0.5


@pytest.mark.parametrize(
    ("quality_ms", "tier", "why"),
    [
        (20.0, "quality", "quality on onnxruntime cpu (20.5 ms ≤ 26.7 ms budget at 30 fps)"),
        (26.5, "fast", "fast on onnxruntime cpu (quality 27.0 ms > 26.7 ms budget at 30 fps"),
        (40.0, "fast", "fast on onnxruntime cpu (quality 40.5 ms > 26.7 ms budget at 30 fps"),
    ],
)
def test_tier_auto_picks_the_tier_that_holds_fps(
    tiers: dict[str, Path], env: Path, quality_ms: float, tier: str, why: str
) -> None:
    fake_probes(env, tiers, quality=quality_ms, fast=5.0)
    with _opened(settings(tiers)) as relay:
        config = relay.config()
        assert config["tier"] == tier and config["tier_note"] == ""
        reason = relay.processor.reason  # type: ignore[attr-defined]
        assert reason.startswith(why) and reason.endswith("includes 0.5 ms of stabilizer")
        assert relay.label.startswith(f"{tiers[tier].name} on ")


def test_model_overrides_the_tiers(tiers: dict[str, Path], env: Path, tmp_path: Path) -> None:
    fake_probes(env, tiers, quality=40.0, fast=5.0)  # auto would take fast
    with _opened(settings(tiers, model=tiers["quality"])) as relay:
        assert relay.config()["tier"] == "quality"
        assert "(--model)" in relay.processor.reason  # type: ignore[attr-defined]


def test_tier_asked_by_name(tiers: dict[str, Path], env: Path) -> None:
    with _opened(settings(tiers, tier="fast")) as relay:
        assert relay.config()["tier"] == "fast"


def test_deblock_relays_through_the_deblock_model(
    tiers: dict[str, Path], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve --deblock``: the pages' full-size streams go through the deblock models
    (found by metadata, beside the restore tiers), never the restore ones."""
    deblock = set_metadata(unsharp_model(tiers["folder"] / "d.onnx", -0.3), mode="deblock")
    with _opened(settings(tiers, deblock=True)) as relay:
        assert relay.label.startswith(f"{deblock.name} on ")
        frame = np.random.default_rng(5).integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)
        with Engine(deblock, provider="cpu") as direct:
            assert np.array_equal(relay.processor.process(frame), direct.process(frame))
    assert build_parser().parse_args(["--deblock"]).deblock is True
    assert main(["--deblock", "--upscale", "2", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--deblock works on the full-size stream and --upscale 2 on a half-size one" in err


def test_options_parse_and_bad_values_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args([])
    defaults = (args.tier, args.backend, args.fps, args.probe_size)
    assert defaults == ("auto", "auto", 30.0, None)  # None: the page's size, 640x480
    args = build_parser().parse_args(["--probe-size", "1280x720", "--tier", "fast"])
    assert args.probe_size == (1280, 720) and args.tier == "fast"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--probe-size", "big"])
    assert "'big' is not a frame size; give WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["--fps", "0"]) == 2
    assert "--fps must be in (0, 1000], got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_process_logs_the_tier_and_config_says_it(tiers: dict[str, Path], env: Path) -> None:
    """The real ``sharpcam serve`` process: its start-up line names the tier and why, and
    ``GET /config`` reports it."""
    from test_webrtc_cli import interrupt, start_server

    fake_probes(env, tiers, quality=40.0, fast=5.0)

    async def run() -> None:
        proc, url = await start_server(
            "--tier", "auto", "--backend", "onnxruntime", "--provider", "cpu",
            "--fps", "30", "--probe-size", "160x120",
        )  # fmt: skip
        assert proc.stdout is not None
        tier_line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        base, _ = split_token(url)
        async with aiohttp.ClientSession() as session, session.get(base + "config") as response:
            config = await response.json()
        code, _, err = await interrupt(proc)
        assert code == 0, err
        # the stabilizer's real time at 160x120 is added to the faked 40.0 ms
        assert re.match(
            r"sharpcam serve: tier: fast on onnxruntime cpu \(quality 4\d\.\d ms > 26\.7 ms budget",
            tier_line,
        ), tier_line
        assert "ms of stabilizer" in tier_line
        assert config["tier"] == "fast" and config["model"].startswith("f.onnx on ")

    asyncio.run(run())


@pytest.mark.slow
def test_sustained_overrun_while_relaying_steps_down(tiers: dict[str, Path]) -> None:
    """Through the real relay (aiortc peer, aiohttp signalling): the quality tier (invert)
    overruns a frame interval no model can hold; after the sustained overrun the relay
    sends the fast tier's frames, and ``/config`` and the figures say so."""
    quality = Engine(tiers["quality"], provider="cpu")
    fast = Engine(tiers["fast"], provider="cpu")
    ticks = itertools.count()
    threads: set[str] = set()

    def clock() -> float:  # half a simulated second per frame, read on the worker thread
        threads.add(threading.current_thread().name)
        return next(ticks) * 0.5

    engine = TieredEngine([quality, fast], fps=1e6, live=True, clock=clock)

    async def run() -> None:
        relay = Relay(
            engine,
            label=lambda: engine.model_path.name,
            settings=RelaySettings(stats_interval_s=0.2),
        )
        async with relay_server(relay) as url:
            assert relay.config()["tier"] == "quality"
            client = await connect(url, track=ColourTrack(), channel=True, options={"split": 0})
            await wait_until(lambda: len(client.frames) >= 2, "frames from the relay")
            await wait_until(lambda: engine.tier == "fast", "the step-down", deadline_s=60)

            def colour() -> np.ndarray:
                return mean_rgb(client.frames[-1].to_ndarray(format="rgb24"), 0.1, 0.9)

            # the video encoder takes a few frames to settle after the whole picture changes
            await wait_until(
                lambda: abs(colour() - np.array(COLOUR)).max() < 25, "the fast tier's frames"
            )
            assert abs(colour() - INVERTED_COLOUR).max() > 50  # no longer inverted
            config = relay.config()
            assert config["tier"] == "fast" and config["model"] == "f.onnx"
            assert config["tier_note"].startswith("tier fast (stepped down from quality:")
            await wait_until(
                lambda: any(m.get("tier") == "fast" for m in client.messages), "fast in figures"
            )
            last = [m for m in client.messages if m.get("tier") == "fast"][-1]
            assert last["model"] == "f.onnx" and "stepped down" in last["tier_note"]
            await client.close()

    try:
        asyncio.run(run())
    finally:
        engine.close()
    assert threads and all(name.startswith("sharpcam-model") for name in threads)


def test_step_down_bookkeeping_is_thread_safe() -> None:
    """Several worker threads at once (a relay given a wider executor): one step-down,
    whatever the interleaving."""

    class Slow:
        def __init__(self, tier: str) -> None:
            self.info = type("Info", (), {"tier": tier})()
            self.last_ms = 50.0

        def process(self, frame: np.ndarray, **_: object) -> np.ndarray:
            return frame

        def close(self) -> None:
            pass

    ticks = itertools.count()
    lock = threading.Lock()

    def clock() -> float:
        with lock:
            return next(ticks) * 0.01

    ladder = [Slow("quality"), Slow("balanced"), Slow("fast")]
    engine = TieredEngine(ladder, fps=30, live=True, clock=clock)  # type: ignore[arg-type]
    frame = np.zeros((2, 2, 3), np.uint8)

    def work() -> None:
        for _ in range(200):
            engine.process(frame)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    # 800 frames over 8 simulated seconds at 50 ms: quality → balanced → fast, one step each
    assert engine.tier == "fast"
    assert engine.status_note.startswith("tier fast (stepped down from balanced:")


def test_a_processor_without_tiers_has_none(invert_engine: Engine) -> None:
    config = make_relay(invert_engine).config()
    assert config["tier"] is None and config["tier_note"] == ""
