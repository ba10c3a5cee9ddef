"""The governor's arithmetic: every limit, with an injected clock."""

from __future__ import annotations

import math

import pytest

from orchestrator.engine.governor import Governor
from orchestrator.plan.model import Limits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrency_slot_frees_on_release() -> None:
    gov = Governor(Limits(max_concurrency=2, spawn_rate=1000), clock=Clock())
    gov.spawned()
    gov.spawned()
    assert gov.delay() == math.inf
    gov.released()
    assert gov.delay() == 0.0


def test_max_agents_is_a_permanent_denial() -> None:
    gov = Governor(Limits(max_concurrency=5, max_agents=2, spawn_rate=1000), clock=Clock())
    gov.spawned()
    gov.released()
    gov.spawned()
    gov.released()
    denial = gov.denial(depth=0)
    assert denial is not None
    assert denial.limit == "max_agents"
    assert gov.agents_left == 0


@pytest.mark.parametrize(("depth", "denied"), [(0, False), (2, False), (3, True)])
def test_depth_past_max_depth_is_denied(depth: int, denied: bool) -> None:
    gov = Governor(Limits(max_depth=2))
    assert (gov.denial(depth=depth) is not None) == denied


def test_spawn_rate_refills_with_time() -> None:
    clock = Clock()
    gov = Governor(Limits(max_concurrency=1, spawn_rate=2), clock=clock)
    gov.spawned()
    gov.released()
    gov.spawned()
    gov.released()
    assert gov.delay() == pytest.approx(0.5)
    clock.now = 0.5
    assert gov.delay() == 0.0


def test_fence_denies_everything_after_it() -> None:
    gov = Governor(Limits())
    gov.raise_fence("cancel --all")
    gov.raise_fence("later reason")
    denial = gov.denial(depth=0)
    assert denial is not None
    assert denial.limit == "fence"
    assert gov.fence == "cancel --all"


def test_budget_reserve_then_settle() -> None:
    gov = Governor(Limits(budget_usd=1.0))
    assert gov.reserve(0.6)
    assert not gov.reserve(0.6)  # only 0.4 left while the first is in flight
    gov.settle(0.6, 0.5)
    assert gov.budget_left == pytest.approx(0.5)
    assert gov.reserve(0.5)
    gov.settle(0.5, 0.5)
    assert gov.budget_spent
    denial = gov.denial(depth=0)
    assert denial is not None
    assert denial.limit == "budget_usd"


def test_no_budget_means_no_money_limit() -> None:
    gov = Governor(Limits(budget_usd=None))
    assert gov.reserve(1e9)
    assert gov.budget_left == math.inf


# --- tasks added at run time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "started", "unstarted", "depth", "spent", "fence", "rule"),
    [
        ({}, 0, 0, 0, 0.0, None, None),
        ({"max_agents": 3}, 1, 2, 0, 0.0, None, "max_agents"),  # waiting tasks count
        ({"max_agents": 3}, 3, 0, 0, 0.0, None, "max_agents"),
        ({"max_agents": 3}, 1, 1, 0, 0.0, None, None),
        ({"max_depth": 2}, 0, 0, 3, 0.0, None, "max_depth"),
        ({"max_depth": 2}, 0, 0, 2, 0.0, None, None),
        ({"budget_usd": 1.0}, 0, 0, 0, 1.0, None, "budget_usd"),
        ({}, 0, 0, 0, 0.0, "cancel --all", "fence"),
    ],
)
def test_an_addition_meets_every_limit_of_a_spawn(
    limits: dict[str, float], started: int, unstarted: int, depth: int, spent: float,
    fence: str | None, rule: str | None,
) -> None:  # fmt: skip
    gov = Governor(Limits(**limits), clock=Clock())  # type: ignore[arg-type]
    for _ in range(started):
        gov.spawned()
    if spent:
        gov.charge(spent)
    if fence:
        gov.raise_fence(fence)
    denial = gov.addition_denial(depth=depth, unstarted=unstarted)
    assert (denial.limit if denial else None) == rule


def test_additions_are_refused_past_the_spawn_rate_until_the_bucket_refills() -> None:
    clock = Clock()
    gov = Governor(Limits(max_concurrency=1, spawn_rate=2.0, max_agents=100), clock=clock)
    assert [gov.addition_denial(depth=0, unstarted=0) for _ in range(2)] == [None, None]
    denial = gov.addition_denial(depth=0, unstarted=0)
    assert denial is not None
    assert denial.limit == "spawn_rate"
    clock.now += 0.5
    assert gov.addition_denial(depth=0, unstarted=0) is None
