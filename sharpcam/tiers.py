"""Which tier (and backend) keeps the frame rate: the pure part of ``--tier auto``.

No models, no clocks: measured milliseconds in, a :class:`Choice` with its one-line reason
out, so the rule can be tested with made-up timings.

The rule: a variant *holds* a frame rate when its model time fits the frame interval
with :data:`HEADROOM` to spare (``ms ≤ interval / 1.25``: the capture, encode and the
call app need the rest). Take the best-looking tier (quality, balanced, fast) whose
fastest variant holds; if none does, the fastest variant of all. Within a tier the
fastest backend wins.

>>> c = choose([Variant("quality", "onnxruntime cpu", 41.0), Variant("fast", "openvino", 9.0)], 30)
>>> c.reason
'fast on openvino (quality 41.0 ms > 26.7 ms budget at 30 fps; fast 9.0 ms)'

During a live run :class:`OverrunMonitor` says when the model has been slower than the
frame interval for several seconds running: time to step down a tier.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sharpcam.models import TIERS

#: Share of the frame interval left free for the rest of the pipeline.
HEADROOM = 0.25
#: Seconds the model must stay over the frame interval before stepping down.
SUSTAIN_S = 3.0
#: Seconds of frames averaged before comparing with the interval.
WINDOW_S = 1.0


@dataclass(frozen=True)
class Variant:
    """One way to run one tier, with its measured model time (ms per frame)."""

    tier: str
    backend: str
    ms: float
    path: Path | None = None


@dataclass(frozen=True)
class Choice:
    """The variant picked, and why, in one line."""

    variant: Variant
    reason: str
    holds: bool
    """Whether it holds the frame rate with the headroom (``False``: nothing did)."""


def budget_ms(fps: float, headroom: float = HEADROOM) -> float:
    """Model milliseconds per frame that hold ``fps`` with ``headroom`` to spare."""
    return 1e3 / fps / (1.0 + headroom)


def _fmt(ms: float) -> str:
    return f"{ms:.1f} ms"


def choose(variants: Sequence[Variant], fps: float | None, headroom: float = HEADROOM) -> Choice:
    """The best tier that holds ``fps`` (``None``: no deadline, the best tier).

    Raises:
        ValueError: no variants.
    """
    if not variants:
        raise ValueError("no variants to choose from")
    fastest: dict[str, Variant] = {}
    for v in variants:
        if v.tier not in fastest or v.ms < fastest[v.tier].ms:
            fastest[v.tier] = v
    order = [t for t in TIERS if t in fastest] + sorted(set(fastest) - set(TIERS))
    backends = _backend_note(variants)
    if fps is None:
        best = fastest[order[0]]
        return Choice(
            best, f"{best.tier} on {best.backend} (no frame rate to hold{backends})", True
        )
    budget = budget_ms(fps, headroom)
    at = f"{fps:.3g} fps"
    rejected: list[str] = []
    for tier in order:
        v = fastest[tier]
        if v.ms <= budget:
            if rejected:
                why = f"{'; '.join(rejected)}; {tier} {_fmt(v.ms)}"
            else:
                why = f"{_fmt(v.ms)} ≤ {_fmt(budget)} budget at {at}"
                if len(order) == 1:
                    why = f"the only tier; {why}"
            return Choice(v, f"{tier} on {v.backend} ({why}{backends})", True)
        rejected.append(f"{tier} {_fmt(v.ms)} > {_fmt(budget)} budget at {at}")
    best = min(fastest.values(), key=lambda v: v.ms)
    why = (
        f"no tier holds {at}: "
        + "; ".join(f"{t} {_fmt(fastest[t].ms)}" for t in order)
        + f" > {_fmt(budget)} budget; taking the fastest"
    )
    return Choice(best, f"{best.tier} on {best.backend} ({why}{backends})", False)


def _backend_note(variants: Sequence[Variant]) -> str:
    """``"; quality: openvino 33 ms vs onnxruntime 140 ms"`` for tiers with several
    backends (empty when each tier has one)."""
    notes = []
    for tier in dict.fromkeys(v.tier for v in variants):
        of_tier = sorted((v for v in variants if v.tier == tier), key=lambda v: v.ms)
        if len(of_tier) > 1:
            notes.append(f"{tier}: " + " vs ".join(f"{v.backend} {_fmt(v.ms)}" for v in of_tier))
    return "; " + "; ".join(notes) if notes else ""


def lower_tier(tier: str, available: Sequence[str]) -> str | None:
    """The next faster tier than ``tier`` among ``available``, or ``None``."""
    ranked = [t for t in TIERS if t in available]
    if tier not in ranked:
        return None
    i = ranked.index(tier)
    return ranked[i + 1] if i + 1 < len(ranked) else None


class OverrunMonitor:
    """Says when the model time has stayed above the frame interval for ``sustain_s``.

    Feed it every frame's ``(time in s, model ms)``; it averages the last ``window_s``
    seconds (one slow frame is not an overrun, one quick frame does not end one) and
    returns ``True`` from :meth:`observe` once the average has been over the interval
    for ``sustain_s`` seconds without a break. It then starts afresh (the caller steps
    down and the new tier gets its own chance).
    """

    def __init__(
        self, fps: float, *, sustain_s: float = SUSTAIN_S, window_s: float = WINDOW_S
    ) -> None:
        self.interval_ms = 1e3 / fps
        self.sustain_s = sustain_s
        self.window_s = window_s
        self._recent: deque[tuple[float, float]] = deque()
        self._since: float | None = None
        self.average_ms = 0.0
        """The last window's mean model time."""

    def observe(self, now: float, model_ms: float) -> bool:
        """Record one frame; ``True`` when the overrun has lasted ``sustain_s``."""
        self._recent.append((now, model_ms))
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        self.average_ms = sum(ms for _, ms in self._recent) / len(self._recent)
        if self.average_ms <= self.interval_ms:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since >= self.sustain_s:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        """Forget what was seen (after a step down)."""
        self._recent.clear()
        self._since = None
