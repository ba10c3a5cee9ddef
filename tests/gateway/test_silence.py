"""The gateway's limit on upstream silence: one timer per answer, re-armed lazily."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.gateway.silence import open_silence_limit


async def test_chunks_that_keep_coming_keep_the_answer_alive_past_the_limit() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with open_silence_limit(0.1) as silence:
        while loop.time() - start < 0.35:  # 3.5 limits long, never silent for one
            await asyncio.sleep(0.02)
            silence.touch()


async def test_silence_for_the_limit_ends_the_block_with_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    touched: list[float] = []

    async def answer() -> None:
        async with open_silence_limit(0.1) as silence:
            for _ in range(5):
                await asyncio.sleep(0.02)
                silence.touch()
            touched.append(loop.time())
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await answer()
    assert loop.time() - touched[0] < 5  # ended by the limit, not by the sleep


async def test_cancellation_passes_through_as_cancellation() -> None:
    async def body() -> None:
        async with open_silence_limit(10):
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
