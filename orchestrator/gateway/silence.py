"""How long an upstream answer may stay silent, checked with one timer per answer.

aiohttp's ``sock_read`` timeout cancels and re-arms a timer at every chunk it reads: for a
stream of a few hundred small events that is a tenth of the gateway's CPU (measured with
py-spy under B11). `open_silence_limit` keeps one timer per answer instead: each chunk only
notes the time (`SilenceLimit.touch`), and the timer, when it fires, either finds the answer
silent for ``limit`` seconds and ends the block with `TimeoutError`, or sets itself again
for ``limit`` after the last chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class SilenceLimit:
    __slots__ = ("_handle", "_limit", "_loop", "_timeout", "last")

    def __init__(self, limit: float, timeout: asyncio.Timeout) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._timeout = timeout
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self.last + limit, self._check
        )

    def touch(self) -> None:
        """Something arrived: the silence starts again now."""
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        if now - self.last >= self._limit:
            self._handle = None
            self._timeout.reschedule(now)  # the block ends with TimeoutError
        else:
            self._handle = self._loop.call_at(self.last + self._limit, self._check)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@contextlib.asynccontextmanager
async def open_silence_limit(limit: float) -> AsyncIterator[SilenceLimit]:
    """A block that ends with `TimeoutError` once nothing has been `touch`-ed for ``limit``
    seconds (from the start of the block, then from each touch)."""
    async with asyncio.timeout(None) as timeout:
        silence = SilenceLimit(limit, timeout)
        try:
            yield silence
        finally:
            silence.close()
