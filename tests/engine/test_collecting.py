"""Full collections while a run goes: on a clock, not from allocation; and what a burst
freed given back (`orchestrator.engine.collecting`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import platform
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import scripted

from orchestrator.engine import recorder as recorder_module
from orchestrator.engine.collecting import (
    NEVER,
    RUN_FULL_COLLECTION,
    collect_every,
    deferred,
    trim_heap,
)
from orchestrator.engine.scheduler import Run
from orchestrator.plan.model import Say, Sleep
from orchestrator.records import writer as writer_module


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


@contextlib.contextmanager
def collections_of(generation: int) -> Iterator[list[int]]:
    """How many collections of ``generation`` begin in the block (the collector's own
    callback)."""
    seen: list[int] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == generation:
            seen.append(1)

    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """How many full collections begin while the test runs."""
    with collections_of(2) as seen:
        yield seen


def allocate() -> list[list[int]]:
    """Enough long-lived containers that the interpreter's own schedule collects in full."""
    return [[i] for i in range(400_000)]


def test_allocation_brings_no_full_collection_in_the_block(full_collections: list[int]) -> None:
    kept = allocate()  # the premise: outside the block, this much does bring one
    assert full_collections, "the interpreter made no full collection for 400,000 objects"
    full_collections.clear()
    with deferred(600.0):
        assert gc.get_threshold() == (700, NEVER, NEVER)
        more = allocate()
        assert len(more) == len(kept)
        assert full_collections == []
    assert gc.get_threshold() == (700, 10, 10)


def test_in_the_block_the_youngest_generation_alone_is_collected_on_allocation() -> None:
    with collections_of(1) as middle:
        kept = allocate()
    assert middle, "the premise: outside the block, allocation collects the middle generation"
    with deferred(600.0), collections_of(0) as young, collections_of(1) as middle:
        more = allocate()
        assert len(more) == len(kept)
    assert young, "the youngest generation is still collected: short-lived cycles die there"
    assert middle == []


def test_a_cycle_that_outlived_the_youngest_generation_waits_for_the_clock() -> None:
    class Node:
        other: Node

    with deferred(600.0):
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect(0)  # it survives its first collection: into the middle generation
        del a, b
        kept = allocate()  # what would bring collections of the middle one outside the block
        assert gone() is not None, "allocation collected the middle generation"
        gc.collect()  # the clock's collection (`collect_every`)
        assert gone() is None
        assert kept


def test_none_a_collector_switched_off_or_a_block_already_open_leave_it() -> None:
    with deferred(None):
        assert gc.get_threshold() == (700, 10, 10)
    gc.disable()
    try:
        with deferred(600.0):
            assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.enable()
    with deferred(600.0), deferred(600.0):  # another run's block inside: the outer one restores
        assert gc.get_threshold() == (700, NEVER, NEVER)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_change_made_meanwhile_is_not_undone() -> None:
    with deferred(600.0):
        gc.set_threshold(500, 5, 5)  # someone else's
    assert gc.get_threshold() == (500, 5, 5)


async def test_the_clock_collects_in_full(full_collections: list[int]) -> None:
    async with asyncio.timeout(20):
        clock = asyncio.create_task(collect_every(0.01))
        while not full_collections:
            await asyncio.sleep(0.01)
        clock.cancel()


async def test_a_run_defers_full_collections_and_keeps_its_clock(
    make_run: Callable[..., Run], full_collections: list[int]
) -> None:
    seen: list[int] = []
    run = make_run(scripted("a", Say("hi"), Sleep(0.3), Say("bye")))
    assert run.settings.full_collection == RUN_FULL_COLLECTION
    run.settings = dataclasses.replace(run.settings, full_collection=0.05)
    run._on_event = lambda rec, line, event: seen.append(gc.get_threshold()[2])
    async with asyncio.timeout(20):
        await run.execute()
    assert run.agents["a"].state == "succeeded"
    assert seen
    assert seen == [NEVER] * len(seen)
    assert full_collections, "the run's clock made no full collection in 0.3 s"
    assert gc.get_threshold() == (700, 10, 10)


async def test_a_run_without_a_clock_keeps_the_interpreters_schedule(
    make_run: Callable[..., Run],
) -> None:
    seen: list[int] = []
    run = make_run(scripted("a", Say("hi")))
    run.settings = dataclasses.replace(run.settings, full_collection=None)
    run._on_event = lambda rec, line, event: seen.append(gc.get_threshold()[2])
    async with asyncio.timeout(20):
        await run.execute()
    assert run.agents["a"].state == "succeeded"
    assert seen
    assert seen == [10] * len(seen)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_heap_gives_back_what_was_freed_below_live_memory() -> None:
    """Freed memory below a live block stays resident (``free`` trims only the heap's top);
    `trim_heap` gives its pages back."""
    blocks = [bytes(2000) for _ in range(20_000)]  # 40 MB of heap blocks, each past pymalloc
    pin = [bytes(2000) for _ in range(10)]  # live above them: the heap's top is not free
    del blocks
    before = rss()
    trim_heap()
    after = rss()
    assert before - after > 20_000_000, (before, after)
    assert len(pin) == 10


async def test_a_run_gives_back_memory_after_its_writer_drains_a_burst(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[str] = []
    monkeypatch.setattr(writer_module, "BURST", 4)
    monkeypatch.setattr(
        recorder_module, "trim_heap", lambda: trims.append(threading.current_thread().name)
    )
    run = make_run(*(scripted(f"t{i}", Say("hi"), Sleep(0.5), Say("bye")) for i in range(20)))
    async with asyncio.timeout(20):
        await run.execute()
    assert all(rec.state == "succeeded" for rec in run.agents.values())
    assert trims
    assert set(trims) == {"orchestrator-writer"}
