"""The interpreter's switch interval while a run goes (`orchestrator.engine.switching`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator

import pytest
from conftest import scripted

from orchestrator.engine.scheduler import Run
from orchestrator.engine.switching import RUN_SWITCH_INTERVAL, switching
from orchestrator.plan.model import Say


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_lowered_for_the_block_then_put_back() -> None:
    with switching(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_never_raised_and_none_leaves_it() -> None:
    for interval in (0.01, None):
        with switching(interval):
            assert sys.getswitchinterval() == pytest.approx(0.005)
        assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_change_made_meanwhile_is_not_undone() -> None:
    with switching(0.001):
        sys.setswitchinterval(0.002)  # someone else's (a run that began later and still goes)
    assert sys.getswitchinterval() == pytest.approx(0.002)


async def test_a_run_goes_at_the_run_interval_and_puts_the_old_one_back(
    make_run: Callable[..., Run],
) -> None:
    seen: list[float] = []
    run = make_run(scripted("a", Say("hi")))
    run._on_event = lambda rec, line, event: seen.append(sys.getswitchinterval())
    async with asyncio.timeout(20):
        await run.execute()
    assert run.agents["a"].state == "succeeded"
    assert seen
    assert seen == pytest.approx([RUN_SWITCH_INTERVAL] * len(seen))
    assert sys.getswitchinterval() == pytest.approx(0.005)
