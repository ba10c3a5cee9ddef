"""When the interpreter's cycle collector walks every object: not in the middle of a run.

A run holds its agents' records, contexts and tasks until they end: some forty objects an
agent, alive for the agent's life. CPython's full collection (its oldest generation) walks
every tracked object, 0.25 us each here, so with 10,000 live agents each one stalled the event
loop for 120-200 ms, and it came every time the oldest generation had grown by a quarter:
five times in one of B4's 6.5 s runs. While a run goes on, full collections come on a clock
instead: once every `RUN_FULL_COLLECTION` seconds (a stall of that size, then), never from
allocation. The youngest generation is collected as always, and it is where short-lived
cycles die. The middle one is left to the clock too: an object that outlives its first
collection lives about as long as its agent, and walking it a second time there (every
agent's forty objects, once more) was half of a run's collecting for next to nothing (193
objects found in cycles over a 20,000-task run; 148 ms of the loop's time). The
interpreter's own schedule comes back when the run ends.

What a burst frees goes back to the system too. A burst of starts leaves the writer thread
tens of thousands of writes behind, and what they held (their bytes, the thread's tables)
is freed once they are carried out, but the C heap keeps the pages: at 10,000 sleeping
agents that was some 0.65 KiB an agent of resident memory nobody used. The writer calls
`trim_heap` when it has carried out a burst and has nothing left (glibc's ``malloc_trim``,
with the interpreter's lock released; elsewhere it does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator

from orchestrator.process import libc

RUN_FULL_COLLECTION = 600.0
"""Seconds between a run's full collections (what is garbage in cycles among long-lived
objects waits at most this long)."""
NEVER = 1 << 30
"""A threshold for the older generations that allocation never reaches."""


@contextlib.contextmanager
def deferred(every: float | None) -> Iterator[None]:
    """Collections of the two older generations only from `collect_every` for the block
    (None: as they were); the youngest is collected on allocation as always.

    Left as it is when the collector is off or another run's block already holds it; the old
    thresholds are put back after unless someone changed them meanwhile."""
    before = gc.get_threshold()
    if every is None or not gc.isenabled() or before[2] >= NEVER:
        yield
        return
    ours = (before[0], NEVER, NEVER)
    gc.set_threshold(*ours)
    try:
        yield
    finally:
        if gc.get_threshold() == ours:
            gc.set_threshold(*before)


async def collect_every(every: float) -> None:
    """A full collection every ``every`` seconds until cancelled (in the run's TaskGroup)."""
    while True:
        await asyncio.sleep(every)
        gc.collect()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). A few milliseconds on a large heap, with the interpreter's lock released, and a
    thread that allocates from the heap meanwhile waits for it: call it off the loop, after a
    burst, not per write."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes  # here: not on the import path of every command

    return libc.function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
