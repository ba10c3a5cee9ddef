"""What every figure shares: the run's configuration, results, statistics, timers, a lag probe."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Config:
    """How big and how often: ``quick`` is the CI smoke size; ``repeats`` applies to the
    measured side of each figure (baselines that are slow and steady may run fewer times)."""

    quick: bool
    repeats: int
    seed: int
    tmp: Path
    """A scratch directory (on a real disk: fsync costs what it costs in production)."""

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclass(frozen=True)
class Row:
    """One line of the table. ``met`` is None when there is no goal or nothing was measured."""

    figure: str
    what: str
    measured: str
    baseline: str
    ratio: str
    goal: str
    met: bool | None
    note: str = ""


@dataclass
class Figure:
    id: str
    title: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """Raw numbers for ``--json`` (seconds unless the key says otherwise)."""
    error: str | None = None
    seconds: float = 0.0
    """How long the figure took to measure."""

    def row(
        self,
        what: str,
        *,
        measured: str,
        baseline: str = "-",
        ratio: str = "-",
        goal: str = "-",
        met: bool | None = None,
        note: str = "",
    ) -> None:
        self.rows.append(Row(self.id, what, measured, baseline, ratio, goal, met, note))


# --- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """The median of repeated measurements, with their range."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = tuple(values)
        if not vals:
            raise ValueError("no measurements")
        return cls(vals)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def fmt(self, unit: Callable[[float], str]) -> str:
        if len(self.values) == 1:
            return unit(self.median)
        return f"{unit(self.median)} ({unit(self.lo)}-{unit(self.hi)})"

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": len(self.values)}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; values need not be sorted."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def secs(v: float) -> str:
    if v >= 10:
        return f"{v:.1f} s"
    if v >= 1:
        return f"{v:.2f} s"
    if v >= 0.01:
        return f"{v * 1e3:.0f} ms"
    if v >= 0.001:
        return f"{v * 1e3:.1f} ms"
    if v >= 1e-4:
        return f"{v * 1e3:.2f} ms"
    return f"{v * 1e6:.1f} us"


def ms(v: float) -> str:
    return f"{v * 1e3:.2f} ms" if v < 0.01 else f"{v * 1e3:.1f} ms"


def us(v: float) -> str:
    if v >= 1e-3:
        return f"{v * 1e3:.2f} ms"
    return f"{v * 1e6:.1f} us" if v < 1e-4 else f"{v * 1e6:.0f} us"


def times(v: float) -> str:
    return f"{v:.3f}x" if v < 1.1 else f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def kib(v: float) -> str:
    return f"{v / 1024:.2f} KiB"


def rate(v: float) -> str:
    return f"{v / 1e3:.0f}k/s" if v >= 1e4 else f"{v:.0f}/s"


# --- probes -------------------------------------------------------------------------------------


class LagProbe:
    """Measures event-loop lag: a ticker sleeps ``interval`` and records how late it woke.

    Use as ``async with LagProbe() as lag:`` around the work; ``lag.samples`` are seconds late.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(max(loop.time() - t0 - self.interval, 0.0))

    async def __aenter__(self) -> LagProbe:
        # The probe is the one task here that outlives no scope: it is cancelled and awaited
        # in __aexit__, so it never leaks past the measured block.
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def p(self, q: float) -> float:
        return percentile(self.samples, q) if self.samples else 0.0


def rss_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def tmpfs_dir() -> Path | None:
    """A fresh directory on /dev/shm (memory-backed: no disk in the measurement), or None."""
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
        return None
    return Path(tempfile.mkdtemp(prefix="orchestrator-bench-", dir="/dev/shm"))


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "executable": sys.executable,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def goal_met(value: float, limit: float) -> bool:
    return value <= limit
