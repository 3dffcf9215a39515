"""What machine this is: cores, CPU name, cache folder, and an estimate of its arithmetic peak.

The peak is an *estimate* from ``/proc/cpuinfo``: cores × clock × fp32 FMA lanes × 2 FMA
units per core (every x86 core since Haswell has two; the clock is the one the kernel
reports, which on a VM is the nominal one). ``sharpcam bench`` says so beside the figure.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: fp32 lanes of one FMA instruction, by the widest vector extension the CPU flags show.
FMA_LANES = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4))
FMA_UNITS = 2


def cache_dir() -> Path:
    """Where sharpcam caches (TensorRT engines, tier probes): ``$SHARPCAM_CACHE``, else
    ``$XDG_CACHE_HOME/sharpcam``, else ``~/.cache/sharpcam`` (not created here)."""
    if env := os.environ.get("SHARPCAM_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sharpcam"


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The CPU's model string (``Intel(R) Xeon(R) ...``), or the platform's guess."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def machine_key() -> str:
    """Identifies this machine for cached measurements: CPU model string and cores."""
    return f"{cpu_name()} x{cpu_count()}"


@dataclass(frozen=True)
class Peak:
    """An estimated fp32 multiply-add peak."""

    cores: int
    ghz: float
    lanes: int
    units: int = FMA_UNITS

    @property
    def gmacs(self) -> float:
        """Billions of multiply-adds per second at that peak."""
        return self.cores * self.ghz * self.lanes * self.units

    def describe(self) -> str:
        return (
            f"estimated fp32 peak {self.gmacs:.0f} GMAC/s = {self.cores} cores × "
            f"{self.ghz:.2f} GHz × {self.lanes} FMA lanes × {self.units} FMA units "
            "(from /proc/cpuinfo; an estimate, not a measurement)"
        )


def estimate_peak() -> Peak | None:
    """The fp32 FMA peak of the cores this process may use, or ``None`` when
    ``/proc/cpuinfo`` does not say the clock."""
    info = _cpuinfo()
    try:
        ghz = float(info["cpu MHz"]) / 1e3
    except (KeyError, ValueError):
        return None
    flags = set(info.get("flags", "").split())
    lanes = next((n for flag, n in FMA_LANES if flag in flags), 1)
    return Peak(cpu_count(), ghz, lanes)
