"""How soon the run's own threads get the interpreter back from a busy event loop.

The run's writer thread, its journal's group-commit thread and the model gateway's thread
each make a system call, then wait for the interpreter lock to go on. While the loop runs
Python without a pause, that wait is the interpreter's switch interval: 5 ms by default, and
a record passes through several such waits on its way to the disk (B10: p99 29-34 ms from a
record to its fsync at 5 ms, 13-14 ms at 0.5 ms; B1, B2 and B6 did not move). So a run lowers
the interval while it goes and puts the old one back after.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

RUN_SWITCH_INTERVAL = 0.0005
"""Seconds: at most this long a thread of the run waits for the loop to let it run."""


@contextlib.contextmanager
def switching(interval: float | None) -> Iterator[None]:
    """The interpreter's switch interval at most ``interval`` for the block (None: as it is).

    Only lowered, never raised; restored after unless someone changed it meanwhile (another
    run in this process that began later keeps its own until it ends)."""
    before = sys.getswitchinterval()
    if interval is None or interval >= before:
        yield
        return
    sys.setswitchinterval(interval)
    ours = sys.getswitchinterval()  # as the interpreter rounds it
    try:
        yield
    finally:
        if sys.getswitchinterval() == ours:
            sys.setswitchinterval(before)
