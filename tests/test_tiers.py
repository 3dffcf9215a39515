"""Tier choice with made-up timings, the live step-down, and the probe cache (no clocks)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from helpers_models import set_metadata, unsharp_model

from sharpcam.probe import ProbeCache
from sharpcam.runtime import TieredEngine
from sharpcam.tiers import OverrunMonitor, Variant, budget_ms, choose, lower_tier


class TestChoose:
    def test_best_tier_that_holds_wins_and_says_why(self) -> None:
        choice = choose(
            [
                Variant("quality", "onnxruntime cpu", 41.0),
                Variant("balanced", "onnxruntime cpu", 30.0),
                Variant("fast", "onnxruntime cpu", 9.0),
            ],
            fps=30,
        )
        assert choice.variant.tier == "fast" and choice.holds
        assert choice.reason == (
            "fast on onnxruntime cpu (quality 41.0 ms > 26.7 ms budget at 30 fps; "
            "balanced 30.0 ms > 26.7 ms budget at 30 fps; fast 9.0 ms)"
        )

    def test_quality_when_it_holds(self) -> None:
        choice = choose([Variant("fast", "x", 5.0), Variant("quality", "x", 20.0)], fps=30)
        assert choice.variant.tier == "quality"
        assert choice.reason == "quality on x (20.0 ms ≤ 26.7 ms budget at 30 fps)"

    def test_headroom_is_25_percent(self) -> None:
        assert budget_ms(30) == pytest.approx(1000 / 30 / 1.25)
        # 30 ms fits a 33.3 ms frame but not with a quarter to spare: the faster tier wins.
        choice = choose([Variant("quality", "x", 30.0), Variant("fast", "x", 10.0)], fps=30)
        assert choice.variant.tier == "fast"

    def test_fastest_backend_within_a_tier(self) -> None:
        choice = choose(
            [Variant("quality", "onnxruntime cpu", 140.0), Variant("quality", "openvino", 33.0)],
            fps=15,
        )
        assert choice.variant.backend == "openvino"
        assert "quality: openvino 33.0 ms vs onnxruntime cpu 140.0 ms" in choice.reason
        assert "the only tier" in choice.reason

    def test_nothing_holds_takes_the_fastest(self) -> None:
        choice = choose([Variant("quality", "x", 200.0), Variant("fast", "x", 50.0)], fps=30)
        assert choice.variant.tier == "fast" and not choice.holds
        assert "no tier holds 30 fps" in choice.reason and "taking the fastest" in choice.reason

    def test_no_frame_rate_takes_the_best_tier(self) -> None:
        choice = choose([Variant("fast", "x", 5.0), Variant("quality", "x", 500.0)], fps=None)
        assert choice.variant.tier == "quality"

    def test_no_variants(self) -> None:
        with pytest.raises(ValueError, match="no variants"):
            choose([], fps=30)

    def test_lower_tier(self) -> None:
        assert lower_tier("quality", ["fast", "quality"]) == "fast"
        assert lower_tier("quality", ["balanced", "fast", "quality"]) == "balanced"
        assert lower_tier("fast", ["fast", "quality"]) is None


class TestOverrunMonitor:
    def test_sustained_overrun_fires_after_sustain(self) -> None:
        monitor = OverrunMonitor(30, sustain_s=3.0)  # 33.3 ms interval
        fired = [monitor.observe(i / 10, 50.0) for i in range(0, 31)]  # 10 frames/s, 3 s
        assert fired.index(True) == 30 and sum(fired) == 1

    def test_short_spikes_do_not(self) -> None:
        monitor = OverrunMonitor(30, sustain_s=3.0)
        # 2 s over, 1.5 s under, 2 s over: never 3 s running.
        times = [(i / 10, 50.0 if (i < 20 or i >= 35) else 10.0) for i in range(55)]
        assert not any(monitor.observe(t, ms) for t, ms in times)

    def test_one_quick_frame_does_not_end_an_overrun(self) -> None:
        monitor = OverrunMonitor(30, sustain_s=2.0, window_s=1.0)
        fired = [monitor.observe(i / 10, 10.0 if i == 12 else 60.0) for i in range(21)]
        assert fired[-1]

    def test_reset(self) -> None:
        monitor = OverrunMonitor(30, sustain_s=1.0)
        for i in range(9):
            monitor.observe(i / 10, 50.0)
        monitor.reset()
        assert not monitor.observe(1.0, 50.0)


class FakeEngine:
    """An engine with a set model time (``last_ms``) and a tier."""

    def __init__(self, tier: str, ms: float) -> None:
        self.info = type("Info", (), {"tier": tier})()
        self.last_ms = ms
        self.calls = 0
        self.closed = False

    def process(self, frame: np.ndarray, **_: object) -> np.ndarray:
        self.calls += 1
        return frame

    def close(self) -> None:
        self.closed = True


class TestStepDown:
    def test_steps_down_after_sustained_overrun_and_says_so(self) -> None:
        now = [0.0]
        quality, fast = FakeEngine("quality", 50.0), FakeEngine("fast", 8.0)
        engine = TieredEngine([quality, fast], fps=30, live=True, clock=lambda: now[0])  # type: ignore[list-item]
        frame = np.zeros((4, 4, 3), np.uint8)
        for _ in range(35):  # 3.4 s at 10 frames/s, 50 ms each
            engine.process(frame)
            now[0] += 0.1
        assert engine.tier == "fast" and fast.calls > 0
        assert engine.status_note.startswith("tier fast (stepped down from quality: 50.0 ms >")
        assert "33.3 ms frame interval for 3 s" in engine.status_note
        calls = fast.calls
        engine.process(frame)
        assert fast.calls == calls + 1 and engine.last_ms == 8.0  # read from the current tier

    @pytest.mark.parametrize(("live", "ms"), [(False, 50.0), (True, 20.0)])
    def test_no_step_down_for_files_or_in_budget(self, live: bool, ms: float) -> None:
        now = [0.0]
        ladder = [FakeEngine("quality", ms), FakeEngine("fast", 8.0)]
        engine = TieredEngine(ladder, fps=30, live=live, clock=lambda: now[0])  # type: ignore[arg-type]
        for _ in range(60):
            engine.process(np.zeros((4, 4, 3), np.uint8))
            now[0] += 0.1
        assert engine.tier == "quality" and engine.status_note == ""

    def test_time_after_the_model_counts(self) -> None:
        """20 ms of model time holds 30 fps; with 20 ms of stabilizer after it, it does not."""
        now = [0.0]
        ladder = [FakeEngine("quality", 20.0), FakeEngine("fast", 8.0)]
        engine = TieredEngine(ladder, fps=30, live=True, after_ms=20.0, clock=lambda: now[0])  # type: ignore[arg-type]
        for _ in range(35):
            engine.process(np.zeros((4, 4, 3), np.uint8))
            now[0] += 0.1
        assert engine.tier == "fast"
        assert "stepped down from quality: 40.0 ms > 33.3 ms" in engine.status_note


class TestProbeCache:
    @pytest.fixture
    def model(self, tmp_path: Path) -> Path:
        return unsharp_model(tmp_path / "m.onnx")

    def test_miss_then_hit(self, tmp_path: Path, model: Path) -> None:
        cache = ProbeCache(tmp_path / "cache", machine="cpu x2")
        assert cache.get(model, "openvino", 1280, 720) is None
        cache.put(model, "openvino", 1280, 720, 12.5)
        again = ProbeCache(tmp_path / "cache", machine="cpu x2")  # read back from disk
        assert again.get(model, "openvino", 1280, 720) == 12.5
        assert again.get(model, "openvino", 640, 360) is None  # another size
        assert again.get(model, "onnxruntime cpu", 1280, 720) is None  # another backend
        assert (again.hits, again.misses) == (1, 2)

    def test_another_machine_misses(self, tmp_path: Path, model: Path) -> None:
        ProbeCache(tmp_path, machine="cpu x2").put(model, "b", 64, 48, 3.0)
        assert ProbeCache(tmp_path, machine="cpu x4").get(model, "b", 64, 48) is None

    def test_changed_model_invalidates(self, tmp_path: Path, model: Path) -> None:
        cache = ProbeCache(tmp_path, machine="m")
        cache.put(model, "b", 64, 48, 3.0)
        set_metadata(model, tier="fast")  # re-exported: new size and time
        st = model.stat()
        os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert cache.get(model, "b", 64, 48) is None
        cache.put(model, "b", 64, 48, 4.0)
        assert len(cache._load()) == 1  # the stale entry was dropped

    def test_measure_probes_once(self, tmp_path: Path, model: Path) -> None:
        from sharpcam.engine import Engine

        cache = ProbeCache(tmp_path, machine="m")
        engine = Engine(model, provider="cpu")
        first = cache.measure(engine, "onnxruntime cpu", 40, 30, seconds=0.01)
        frames = engine.frames
        assert cache.measure(engine, "onnxruntime cpu", 40, 30) == pytest.approx(first, abs=1e-3)
        assert engine.frames == frames  # the second came from the cache

    def test_unreadable_cache_file_is_a_miss(self, tmp_path: Path, model: Path) -> None:
        (tmp_path / "probes.json").write_text("{not json")
        cache = ProbeCache(tmp_path, machine="m")
        assert cache.get(model, "b", 64, 48) is None
        cache.put(model, "b", 64, 48, 1.0)
        assert cache.get(model, "b", 64, 48) == 1.0


def test_status_line_says_the_step_down(fake_camera: object) -> None:
    """Through the real live pipeline (fake webcam): once the monitor fires, every status
    line ends with the note."""
    from sharpcam.pipeline import RunSettings, run_live
    from sharpcam.sinks import Sink
    from sharpcam.sources import CameraSource

    class NullSink(Sink):
        name = "null"

        def send(self, frame: object, original: object = None) -> None:
            pass

        def close(self, *, complete: bool = True) -> None:
            pass

    now = [0.0]

    def clock() -> float:  # 10 frames per simulated second
        now[0] += 0.1
        return now[0]

    ladder = [FakeEngine("quality", 50.0), FakeEngine("fast", 8.0)]
    engine = TieredEngine(ladder, fps=30, live=True, clock=clock)  # type: ignore[arg-type]
    lines: list[str] = []
    settings = RunSettings(status_every=0.001, max_frames=60)
    with CameraSource(0) as camera:
        run_live(camera, engine, [NullSink()], settings, report=lines.append)
    assert engine.tier == "fast"
    assert lines[-1].endswith(engine.status_note) and "stepped down from quality" in lines[-1]
    assert not lines[0].endswith(engine.status_note)


def test_open_engine_says_the_provider_once(caplog: pytest.LogCaptureFixture) -> None:
    """``--tier auto`` opens an engine per tier and backend; the provider line is said once."""
    from sharpcam.runtime import EngineSettings, open_engine

    with caplog.at_level(logging.INFO, logger="sharpcam"):
        engine = open_engine(EngineSettings(backend="onnxruntime"), width=64, height=48, fps=25)
    engine.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("provider: ")]
    assert len(lines) == 1


@pytest.mark.parametrize("stabilize", [False, True])
def test_the_probe_adds_the_stabilizer(stabilize: bool) -> None:
    """With the stabilizer on, every tier's probe time includes its blend at the frame size,
    and the start-up line says how much; the live check counts it too."""
    from sharpcam.runtime import EngineSettings, open_engine

    settings = EngineSettings(backend="onnxruntime", stabilize=stabilize)
    engine = open_engine(settings, width=64, height=48, fps=25, live=True)
    engine.close()
    assert ("ms of stabilizer" in engine.reason) == stabilize
    assert (engine.after_ms > 0) == stabilize


def test_blend_ms_times_the_blend() -> None:
    from sharpcam.temporal import blend_ms

    small, big = blend_ms(64, 48, runs=3), blend_ms(640, 480, runs=3)
    assert 0 < small < big  # 100 times the pixels: measurably slower
