"""A cheap, motion-aware temporal blend that stops a per-frame model from flickering.

A restorer run frame by frame answers codec noise and tiny input changes with output
changes of its own: on a still face the output shimmers more than the input did.
:class:`Stabilizer` (one per stream) looks at how much the *input* changed since the
previous frame, per pixel, on a slightly blurred luma (so codec noise counts as still and
real motion does not), and where it barely changed blends the model's output with the
previous stabilized output, and adds back a share ``follow`` of the input's own change::

    o'_t = w * o'_{t-1} + (1 - w) * o_t + follow * w * (x_t - x_{t-1}),
    w = beta (still) ... 0 (moving), a linear ramp on the input's change

``follow`` 0 blends the outputs (it also smooths the input's codec noise, but lags slow
real changes); 1 blends only what the model added (``o - x``), so the input's changes pass
at once. ``smooth`` splits the input's change first: its 3x3 box average passes in full,
only the rest (pixel-level noise) by ``follow``.

The defaults depend on the model's scale (:data:`SETTINGS_BY_SCALE`). They were chosen on
the three *training* clips of the call benchmark (seed blur, H.264 and VP8 calls, blocking;
the shipped quality and fast models) as the settings that keep every flicker ratio at or
below 1 while losing the least PSNR gain, then reported on the evaluation clips (README):
a restore model blends up to 5..16 grey levels of change, passes the smooth part of the
input's change and 0.6 of the rest; a ×2 model blends up to 6..20 and passes the input's
change in full (a partial follow lagged the seed blur's real changes: flicker 1.02-1.18).

Moving pixels keep the model's own output (no ghosting); the motion map is widened by a few
pixels so edges next to motion are not blended either. A ×2 model's output is twice the
input: the weight map, computed on the input, is enlarged with linear interpolation. The
first frame, a frame of another size and a scene cut (mean luma change above
``cut``) pass through unchanged and restart the blend.

OpenCV in uint8/int16 fixed point (weights in 1/256), in bands of rows that stay in cache.
``python -m sharpcam.temporal --model models/sharpcam-fast.onnx`` times it interleaved with
that model's 720p call (one thread): on one core of a 2-core AMD EPYC (Zen 4) 8-11 ms (x1,
720p; 17 ms as one pass over the frame) and 6-8 ms (x2, 360p in, 720p out; 11 ms as one
pass) median, 12-14 % and 8-11 % of the fast model's call.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_FINE = 8
"""Fixed-point fraction of a grey level in the blend's int16 sums (8 * 2 * 255 fits)."""

_BAND_ROWS = 48
"""Output rows blended at a time: a 1280-wide band's int16 temporaries (about 370 kB each)
stay in a core's cache instead of streaming whole frames through memory (about 1.9x faster
at 720p, the same numbers: the blur and the x2 enlargement get halo rows from the
neighbours)."""


@dataclass(frozen=True)
class StabilizerSettings:
    """How strongly and where the blend acts.

    Attributes:
        beta: weight of the previous stabilized output where the input is still (0..1).
        still: per-pixel blurred-luma change (grey levels) up to which a pixel is still.
        moving: change from which a pixel is moving (weight 0); linear between the two.
        spread: side of the square (input pixels) by which motion is widened.
        cut: mean blurred-luma change (grey levels) above which a frame is a scene cut.
        follow: share of the input's change added back where blended (0..1).
        smooth: side of the box filter that splits the input's change into a smooth part,
            always added back in full, and the rest, added back by ``follow`` (0: no split,
            all of it by ``follow``). Real changes of a still scene (light, a slow drift,
            a soft input) are smooth; sensor and codec noise is not.
    """

    beta: float = 0.7
    still: int = 5
    moving: int = 16
    spread: int = 5
    cut: float = 20.0
    follow: float = 0.6
    smooth: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")
        if not 0 <= self.still < self.moving <= 255:
            raise ValueError(f"need 0 <= still < moving <= 255, got {self.still}, {self.moving}")
        if self.spread < 1:
            raise ValueError(f"spread must be at least 1, got {self.spread}")
        if not 0.0 <= self.follow <= 1.0:
            raise ValueError(f"follow must be in [0, 1], got {self.follow}")
        if self.smooth < 0 or (self.smooth and self.smooth % 2 == 0):
            raise ValueError(f"smooth must be 0 or an odd side, got {self.smooth}")


#: Default settings per model scale (1: restore, 2: x2); see the module docstring.
SETTINGS_BY_SCALE: dict[int, StabilizerSettings] = {
    1: StabilizerSettings(),
    2: StabilizerSettings(still=6, moving=20, follow=1.0, smooth=0),
}


class Stabilizer:
    """Per-stream state of the temporal blend (see the module docstring).

    Call it with each input frame and the model's output for it, in order; it returns the
    output to show. Frames are ``HxWx3 uint8``; the output is the input's size or ``k``
    times it. The returned array is kept as the next frame's reference: do not modify it
    in place.

    Args:
        settings: fixed settings; ``None`` (the default) takes those of
            :data:`SETTINGS_BY_SCALE` for the scale of the first frame (and again after a
            change of size).
    """

    def __init__(self, settings: StabilizerSettings | None = None) -> None:
        self._fixed = settings
        self.resets = 0
        self._configure(settings or SETTINGS_BY_SCALE[1])
        self.reset()

    def _configure(self, settings: StabilizerSettings) -> None:
        self.settings = settings
        ramp = (settings.moving - np.arange(256, dtype=np.float32)) / (
            settings.moving - settings.still
        )
        # fixed point: weights in 1/256, sums in 1/_FINE grey levels (int16 all along)
        self._lut = np.rint(256 * settings.beta * np.clip(ramp, 0.0, 1.0)).astype(np.uint8)
        self._kernel = np.ones((settings.spread, settings.spread), np.uint8)

    def reset(self) -> None:
        """Forget the previous frame: the next one passes through unchanged."""
        self._luma: np.ndarray | None = None
        self._frame: np.ndarray | None = None
        self._out: np.ndarray | None = None

    def _features(self, frame: np.ndarray) -> np.ndarray:
        luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.blur(luma, (3, 3))

    def weight(self, frame: np.ndarray) -> np.ndarray | None:
        """The previous output's weight per input pixel (``HxW uint8``, in 1/256), or ``None``
        when ``frame`` starts over (first frame, new size, scene cut); remembers it."""
        luma = self._features(frame)
        previous, self._luma = self._luma, luma
        if previous is None or previous.shape != luma.shape:
            return None
        change = cv2.absdiff(luma, previous)
        if cv2.mean(change)[0] > self.settings.cut:
            return None
        return cv2.LUT(cv2.dilate(change, self._kernel), self._lut)

    def __call__(self, frame: np.ndarray, output: np.ndarray) -> np.ndarray:
        """The stabilized ``output`` of the model for input ``frame``."""
        k = output.shape[0] // frame.shape[0]  # the model's scale
        if self._fixed is None:
            settings = SETTINGS_BY_SCALE[2 if k >= 2 else 1]
            if settings is not self.settings:
                self._configure(settings)
        w = self.weight(frame)
        previous, last = self._out, self._frame
        keep = self.settings.follow or self.settings.smooth
        self._frame = frame.copy() if keep else None
        if w is None or previous is None or previous.shape != output.shape:
            if previous is not None:
                self.resets += 1
            self._out = output
            return output
        # in bands of rows that stay in cache, each with halo rows for the blur and, at x2,
        # the enlargement of the maps; the halo is cropped, so the numbers are the whole frame's
        h = frame.shape[0]
        halo = self.settings.smooth // 2 + (1 if k > 1 else 0)
        step = max(1, _BAND_ROWS // k)
        blended = np.empty_like(output)
        for y0 in range(0, h, step):
            y1 = min(h, y0 + step)
            a0, a1 = max(0, y0 - halo), min(h, y1 + halo)
            rows, big = slice(a0, a1), slice(k * a0, k * a1)
            part = self._blend(
                frame[rows],
                output[big],
                w[rows],
                previous[big],
                None if last is None else last[rows],
            )
            blended[k * y0 : k * y1] = part[k * (y0 - a0) : k * (y1 - a0)]
        self._out = blended
        return blended

    def _blend(
        self,
        frame: np.ndarray,
        output: np.ndarray,
        w: np.ndarray,
        previous: np.ndarray,
        last: np.ndarray | None,
    ) -> np.ndarray:
        """The blend of ``output`` (rows of it, or all of it) with the previous shown frame."""
        h, wd = output.shape[:2]
        w16 = w.astype(np.int16)  # same-type multiply below: 5x faster than uint8 x int16
        w3 = cv2.merge([w16, w16, w16])
        if w3.shape[:2] != (h, wd):
            w3 = cv2.resize(w3, (wd, h), interpolation=cv2.INTER_LINEAR)
        # w * ((o'_{t-1} - o_t) + follow * (x_t - x_{t-1})), summed in 1/_FINE levels
        lag = cv2.subtract(previous, output, dtype=cv2.CV_16S)
        if last is not None:
            change = cv2.subtract(frame, last, dtype=cv2.CV_16S)
            follow = self.settings.follow * _FINE
            smooth = None
            if self.settings.smooth:  # its smooth part in full, the rest by follow
                k = self.settings.smooth
                smooth = cv2.blur(change, (k, k), borderType=cv2.BORDER_REPLICATE)
            if change.shape != lag.shape:
                change = cv2.resize(change, (wd, h), interpolation=cv2.INTER_LINEAR)
                if smooth is not None:
                    smooth = cv2.resize(smooth, (wd, h), interpolation=cv2.INTER_LINEAR)
            if smooth is not None:
                lag = cv2.addWeighted(lag, _FINE, smooth, _FINE - follow, 0.0, dtype=cv2.CV_16S)
                lag = cv2.addWeighted(lag, 1.0, change, follow, 0.0, dtype=cv2.CV_16S)
            else:
                lag = cv2.addWeighted(lag, _FINE, change, follow, 0.0, dtype=cv2.CV_16S)
            scale = 1.0 / (256 * _FINE)
        else:
            scale = 1.0 / 256
        lag = cv2.multiply(lag, w3, scale=scale)
        return cv2.add(output, lag, dtype=cv2.CV_8U)  # saturated


def blend_ms(width: int, height: int, scale: int = 1, runs: int = 7) -> float:
    """Median milliseconds of one :class:`Stabilizer` call on ``width x height`` input frames
    (outputs ``scale`` times that), on a still, noisy synthetic scene: every pixel is blended,
    the most work the blend does. The runtime adds it to each tier's probe."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), np.uint8)
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    big = cv2.resize(base, (width * scale, height * scale), interpolation=cv2.INTER_LINEAR)
    stabilizer = Stabilizer()
    times = []
    for t in range(runs + 1):
        noisy = cv2.add(base, rng.integers(0, 3, base.shape, np.uint8))
        start = time.perf_counter()
        stabilizer(noisy, big)
        if t:  # the first call only passes through
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv: Sequence[str] | None = None) -> int:
    """Benchmark: median and p95 ms per frame of the blend at 720p (x1 on 1280x720, x2 on
    640x360 -> 1280x720), one OpenCV thread; with ``--model``, interleaved with that model's
    720p call (ONNX Runtime CPU, one thread) and the ratio of the medians."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sharpcam.temporal", description=main.__doc__)
    parser.add_argument("--model", default=None, help="a scale-1 model to time beside it")
    parser.add_argument("--frames", type=int, default=40, help="timed frames per variant")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    engine = None
    if args.model:
        from sharpcam.engine import Engine

        engine = Engine(args.model, provider="cpu", threads=1)
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (90, 160, 3), np.uint8), (1280, 720))
    timings: dict[str, list[float]] = {"x1 720p": [], "x2 360p->720p": [], "model 720p": []}
    stabs = {"x1 720p": Stabilizer(), "x2 360p->720p": Stabilizer()}
    for t in range(args.frames + 1):
        noisy = cv2.add(base, rng.integers(0, 3, base.shape, np.uint8))
        small = cv2.resize(noisy, (640, 360), interpolation=cv2.INTER_AREA)
        if engine is not None:
            start = time.perf_counter()
            engine.process(noisy)
            timings["model 720p"].append((time.perf_counter() - start) * 1e3)
        for label, frame in (("x1 720p", noisy), ("x2 360p->720p", small)):
            start = time.perf_counter()
            stabs[label](frame, noisy)
            if t:  # the first frame only passes through
                timings[label].append((time.perf_counter() - start) * 1e3)
    for label, ms in timings.items():
        if ms:
            print(f"{label}: {np.median(ms):.2f} ms median, {np.percentile(ms, 95):.2f} p95")
    if timings["model 720p"]:
        model = float(np.median(timings["model 720p"]))
        for label in stabs:
            print(f"{label} blend / model call: {np.median(timings[label]) / model:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
