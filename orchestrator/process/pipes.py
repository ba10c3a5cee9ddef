"""A child's pipes as lines, and what all children together may do in one loop turn.

At most `LINES_PER_TURN` lines are delivered per event-loop turn by all pipes together and at
most `SPAWNS_PER_TURN` children are started, so a hundred children printing or starting at
once cannot stall the loop. Nothing read is ever dropped: what waits is held with reading
paused until the next turn.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import weakref
from collections.abc import Callable, Mapping

from orchestrator.process.group import kill_group
from orchestrator.process.lines import LineSplitter, Stream

LINES_PER_TURN = 1024
"""Lines all pipes together may deliver per event-loop turn (see `Pipes`)."""
SPAWNS_PER_TURN = 4
"""Children started per event-loop turn (see `spawn_turn`)."""
READ_CHUNK = 256 * 1024
"""Bytes read from one pipe per wake-up."""
FINAL_READ = 4 * 1024 * 1024
"""Bytes `Pipes.close` reads at most per pipe after the group was stopped."""


class TurnBudget:
    """What all children together may do in one turn of the event loop (lines, spawns)."""

    __slots__ = ("_left", "_loop", "_per_turn", "_reset")

    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int = LINES_PER_TURN) -> None:
        self._loop = loop
        self._per_turn = per_turn
        self._left = per_turn
        self._reset = False

    def left(self) -> int:
        return self._left

    def spend(self, lines: int) -> None:
        self._left = max(self._left - lines, 0)
        if not self._reset:
            self._reset = True
            self._loop.call_soon(self._refill)

    def _refill(self) -> None:
        self._left = self._per_turn
        self._reset = False


_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary()
)
_SPAWN_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary()
)


def _budget(loop: asyncio.AbstractEventLoop) -> TurnBudget:
    budget = _BUDGETS.get(loop)
    if budget is None:
        budget = _BUDGETS[loop] = TurnBudget(loop)
    return budget


async def spawn_turn(loop: asyncio.AbstractEventLoop) -> None:
    """Wait for one of the `SPAWNS_PER_TURN` spawns a loop turn allows: each fork/exec
    holds the loop for about a millisecond, and a hundred at once would stall it."""
    budget = _SPAWN_BUDGETS.get(loop)
    if budget is None:
        budget = _SPAWN_BUDGETS[loop] = TurnBudget(loop, SPAWNS_PER_TURN)
    while budget.left() <= 0:  # noqa: ASYNC110 - waiting for the next turn of the loop itself
        await asyncio.sleep(0)
    budget.spend(1)


class Pipes:
    """A child's stdout and stderr read straight from their descriptors, as lines.

    Readers are registered with the event loop synchronously (no connect step that could be
    cancelled half-way), and nothing ever waits for the pipes: `closed` only tells whether
    both reached EOF. At most `LINES_PER_TURN` lines are handled per loop turn by all pipes of
    all children together (`TurnBudget`): the rest of a chunk waits, with that descriptor off
    the loop, until the next turn, so a hundred children printing as fast as they can cannot
    stall the event loop. `close` reads what is still buffered (bounded) and delivers it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_lines: Callable[[Stream, list[str]], None],
        max_line: int,
        fds: Mapping[int, int],
        *,
        pgid: int,
        on_activity: Callable[[], None] | None = None,
    ) -> None:
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: Exception | None = None
        self.pgid = pgid
        self.progress = 0
        """Bytes turned into lines so far: `run_streaming` drains while this grows."""
        self._loop = loop
        self._fds = dict(fds)
        """Stream number (1 stdout, 2 stderr) -> our read end, while it is open."""
        self._on_activity = on_activity
        """Told of every chunk read, line or not: dots and ``\\r`` bars are output too."""
        self._backlog: dict[int, bytes] = {}
        self._splitters: dict[int, LineSplitter] = {
            1: LineSplitter(functools.partial(on_lines, "stdout"), max_line),
            2: LineSplitter(functools.partial(on_lines, "stderr"), max_line),
        }
        for key, fd in self._fds.items():
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, key)

    @property
    def backlogged(self) -> bool:
        """Output already read but not yet delivered (waiting for a turn's line budget)."""
        return bool(self._backlog)

    def close(self) -> None:
        """Deliver what was read or is still buffered in the pipes, then close them.

        Reads at most `FINAL_READ` bytes per pipe: a process that escaped the group and keeps
        writing cannot keep this going. Nothing already read is ever dropped.
        """
        for key in list(self._fds):
            self._consume(key, self._backlog.pop(key, b""), None)
            left = FINAL_READ
            while left > 0 and key in self._fds:
                data = self._read(key)
                if not data:
                    break
                left -= len(data)
                self._consume(key, data, None)
            self._eof(key)

    def detach(self) -> None:
        """Deliver no more lines and close the pipes without reading them."""
        self._splitters.clear()
        self._backlog.clear()
        for key in list(self._fds):
            self._eof(key)

    def _readable(self, key: int) -> None:
        data = self._read(key)
        if data is None:
            return  # spurious wake-up
        if not data:
            self._consume(key, self._backlog.pop(key, b""), None)
            self._eof(key)
            return
        if self._on_activity is not None:
            self._on_activity()
        if key in self._backlog:  # cannot happen while off the loop, but order must hold
            self._backlog[key] += data
            return
        self._consume(key, data, _budget(self._loop).left())

    def _read(self, key: int) -> bytes | None:
        """A chunk, b"" at EOF (or a broken pipe), None when nothing is there now."""
        try:
            return os.read(self._fds[key], READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _eof(self, key: int) -> None:
        fd = self._fds.pop(key, None)
        if fd is None:
            return
        self._loop.remove_reader(fd)
        os.close(fd)
        splitter = self._splitters.pop(key, None)
        if splitter is not None and self.error is None:
            try:
                splitter.flush()
            except Exception as error:
                self._fail(error)
        if not self._fds and not self.closed.done():
            self.closed.set_result(None)

    def _consume(self, key: int, data: bytes, max_lines: int | None) -> None:
        splitter = self._splitters.get(key)
        if splitter is None or self.error is not None or not data:
            return
        try:
            rest = splitter.feed(data, max_lines)
        except Exception as exc:
            self._fail(exc)
            return
        used = len(data) - len(rest)
        self.progress += used
        if max_lines is not None:
            _budget(self._loop).spend(data.count(b"\n", 0, used))
        if rest:
            self._backlog[key] = rest
            self._set_reading(key, False)
            self._loop.call_soon(self._next_turn, key)

    def _next_turn(self, key: int) -> None:
        waiting = self._backlog.pop(key, None)
        if waiting is None:
            return
        self._consume(key, waiting, _budget(self._loop).left())
        if key not in self._backlog:
            self._set_reading(key, True)

    def _set_reading(self, key: int, on: bool) -> None:
        fd = self._fds.get(key)
        if fd is None:
            return
        if on:
            self._loop.add_reader(fd, self._readable, key)
        else:
            self._loop.remove_reader(fd)

    def _fail(self, exc: Exception) -> None:
        # A bug in the consumer: stop the child now, run_streaming re-raises after the reap.
        self.error = exc
        self._splitters.clear()
        self._backlog.clear()
        if self.pgid > 1:
            kill_group(self.pgid, signal.SIGKILL)
