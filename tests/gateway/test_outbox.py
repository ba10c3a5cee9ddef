"""What the gateway's thread posts to the scheduler's loop: all of it, in order, in batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.gateway.shared import Outbox


class CountingLoop:
    """The running loop, counting the wake-ups asked of it from other threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wakeups = 0

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        self.wakeups += 1
        self.loop.call_soon_threadsafe(callback, *args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon(callback, *args)


class Seen(list[Any]):
    """What the callbacks saw (they run on the loop); `wait_for` wakes at a count."""

    def __init__(self) -> None:
        super().__init__()
        self._want = 0
        self._reached = asyncio.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) >= self._want:
            self._reached.set()

    async def wait_for(self, n: int) -> None:
        self._want = n
        self._reached = asyncio.Event()
        if len(self) < n:
            async with asyncio.timeout(10):
                await self._reached.wait()


async def test_a_burst_posted_from_another_thread_runs_in_order_after_one_wakeup() -> None:
    loop = CountingLoop(asyncio.get_running_loop())
    outbox = Outbox(loop)  # type: ignore[arg-type]
    seen = Seen()

    def burst() -> None:
        for n in range(1000):
            outbox.post(seen.append, n)

    # The loop is busy (this thread waits on the poster) while the whole burst is posted.
    poster = threading.Thread(target=burst)
    poster.start()
    poster.join()
    await seen.wait_for(1000)
    assert seen == list(range(1000))
    assert loop.wakeups == 1


async def test_posts_after_a_batch_ran_wake_the_loop_again() -> None:
    loop = CountingLoop(asyncio.get_running_loop())
    outbox = Outbox(loop)  # type: ignore[arg-type]
    seen = Seen()
    for n in range(3):
        await asyncio.to_thread(outbox.post, seen.append, n)
        await seen.wait_for(n + 1)
    assert seen == [0, 1, 2]
    assert loop.wakeups == 3


async def test_a_callback_that_raises_is_reported_and_the_rest_of_its_batch_still_runs() -> None:
    real = asyncio.get_running_loop()
    reported: list[BaseException] = []
    real.set_exception_handler(lambda _loop, ctx: reported.append(ctx["exception"]))
    try:
        outbox = Outbox(real)
        seen = Seen()

        def boom(_n: int) -> None:
            raise RuntimeError("a hook failed")

        def burst() -> None:
            outbox.post(seen.append, 1)
            outbox.post(boom, 2)
            outbox.post(seen.append, 3)
            outbox.post(seen.append, 4)

        poster = threading.Thread(target=burst)
        poster.start()
        poster.join()
        await seen.wait_for(3)
    finally:
        real.set_exception_handler(None)
    assert seen == [1, 3, 4]
    assert len(reported) == 1
    assert isinstance(reported[0], RuntimeError)


@pytest.mark.parametrize("posters", [4])
async def test_posts_from_several_threads_all_arrive_each_in_its_own_order(posters: int) -> None:
    outbox = Outbox(asyncio.get_running_loop())
    seen = Seen()

    def burst(who: int) -> None:
        for n in range(500):
            outbox.post(seen.append, (who, n))

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(posters)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    await seen.wait_for(posters * 500)
    for who in range(posters):
        assert [n for w, n in seen if w == who] == list(range(500))
