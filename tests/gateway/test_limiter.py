"""The retry policy and the run's API gate: pure tables first, then the async limiter."""

from __future__ import annotations

import asyncio
import email.utils
import itertools

import pytest

from orchestrator.gateway.limiter import (
    Aimd,
    ApiFailure,
    ApiLimiter,
    RetryPolicy,
    TokenBucket,
    backoff,
    parse_retry_after,
    retry_delay,
)

POLICY = RetryPolicy(max_attempts=8, base_delay=0.5, max_delay=30.0, retry_after_cap=60.0)


def top(attempt: int) -> float:
    return backoff(attempt, POLICY, rand=lambda: 1.0)


# --- retry-after ------------------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),
    ],
)
def test_retry_after_is_read_from_the_headers(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert parse_retry_after(headers, now=NOW) == seconds


# --- which failures are retried, after how long -----------------------------------------------


@pytest.mark.parametrize(
    ("failure", "attempt", "delay"),
    [
        (ApiFailure("fatal", "401"), 0, None),
        (ApiFailure("fatal", "400", retry_after=1.0), 0, None),
        (ApiFailure("rate_limit", "429", retry_after=7.0), 0, 7.0),
        (ApiFailure("rate_limit", "429", retry_after=3600.0), 0, 60.0),  # capped
        (ApiFailure("overload", "529", retry_after=2.0), 3, 2.0),
        (ApiFailure("transient", "timeout"), 7, None),  # the 8th try was the last
        (ApiFailure("rate_limit", "429", retry_after=1.0), 7, None),
    ],
)
def test_retry_delay_table(failure: ApiFailure, attempt: int, delay: float | None) -> None:
    assert retry_delay(failure, attempt, POLICY, rand=lambda: 1.0) == delay


def test_backoff_doubles_up_to_its_ceiling_with_full_jitter() -> None:
    assert [top(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert top(10_000) == 30.0  # no overflow
    assert backoff(3, POLICY, rand=lambda: 0.0) == 0.0
    assert backoff(3, POLICY, rand=lambda: 0.5) == 2.0


def test_failures_without_retry_after_back_off() -> None:
    failure = ApiFailure("overload", "529")
    assert retry_delay(failure, 2, POLICY, rand=lambda: 1.0) == 2.0
    assert retry_delay(ApiFailure("transient", "reset"), 0, POLICY, rand=lambda: 0.5) == 0.25


# --- AIMD ---------------------------------------------------------------------------------------


def test_aimd_halves_on_overload_and_adds_one_per_success() -> None:
    aimd = Aimd(ceiling=16)
    assert aimd.on_overload(aimd.epoch)
    assert aimd.capacity == 8
    assert aimd.on_overload(aimd.epoch)
    assert aimd.capacity == 4
    for _ in range(3):
        aimd.on_success()
    assert aimd.capacity == 7
    for _ in range(100):
        aimd.on_success()
    assert aimd.capacity == 16  # never above the ceiling
    assert aimd.lowest == 4
    assert aimd.decreases == 2


def test_aimd_never_goes_under_its_floor() -> None:
    aimd = Aimd(ceiling=5, floor=2)
    for _ in range(10):
        aimd.on_overload(aimd.epoch)
    assert aimd.capacity == 2
    assert Aimd(ceiling=0).capacity == 1


def test_a_wave_of_failures_from_one_epoch_lowers_the_limit_once() -> None:
    aimd = Aimd(ceiling=64)
    epoch = aimd.epoch  # 50 requests admitted together, all overloaded
    lowered = [aimd.on_overload(epoch) for _ in range(50)]
    assert lowered.count(True) == 1
    assert aimd.capacity == 32
    assert aimd.on_overload(aimd.epoch)  # a request admitted after the decrease counts again
    assert aimd.capacity == 16


# --- token bucket -----------------------------------------------------------------------------


def test_the_bucket_lets_a_burst_through_then_paces() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)
    for _ in range(3):
        assert bucket.delay(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(0.1)
    assert bucket.delay(0.05) == pytest.approx(0.05)
    assert bucket.delay(0.1) == pytest.approx(0.0)


def test_a_hold_stops_everything_until_it_passes_and_is_never_shortened() -> None:
    bucket = TokenBucket(rate=100.0, burst=10.0, now=0.0)
    bucket.hold(0.0, 2.0)
    bucket.hold(0.0, 1.0)
    assert bucket.delay(0.5) == pytest.approx(1.5)
    assert bucket.delay(2.0) == 0.0


# --- the async limiter ------------------------------------------------------------------------


async def test_in_flight_requests_never_exceed_the_capacity() -> None:
    limiter = ApiLimiter(ceiling=4, rate=1000.0)
    seen: list[int] = []

    async def request() -> None:
        async with limiter.slot() as permit:
            seen.append(limiter.in_flight)
            await asyncio.sleep(0.01)
            limiter.report(permit, "ok")

    async with asyncio.TaskGroup() as tg:
        for _ in range(20):
            tg.create_task(request())

    assert max(seen) == limiter.peak_in_flight == 4
    assert limiter.in_flight == 0
    assert limiter.admitted == 20


async def test_overload_lowers_the_capacity_and_successes_restore_it() -> None:
    limiter = ApiLimiter(ceiling=8, rate=1000.0)
    async with limiter.slot() as permit:
        limiter.report(permit, "slow_down")
    async with limiter.slot() as permit:
        limiter.report(permit, "slow_down")
    assert (limiter.capacity, limiter.lowest) == (2, 2)

    go = asyncio.Event()

    async def request() -> None:
        async with limiter.slot() as permit:
            await go.wait()
            limiter.report(permit, "ok")

    async with asyncio.TaskGroup() as tg:
        for _ in range(10):
            tg.create_task(request())
        while limiter.in_flight < 2:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.02)
        assert limiter.in_flight == 2  # the lowered capacity holds the other eight back
        go.set()

    assert limiter.capacity == 8  # eight successes brought it back to the ceiling
    assert limiter.lowest == 2


async def test_a_retry_after_holds_every_new_request_of_the_run() -> None:
    limiter = ApiLimiter(ceiling=8, rate=1000.0)
    loop = asyncio.get_running_loop()
    async with limiter.slot() as permit:
        limiter.report(permit, "slow_down", retry_after=0.2)
    start = loop.time()
    async with limiter.slot():
        waited = loop.time() - start
    assert waited >= 0.19


async def test_requests_are_admitted_first_come_first_served() -> None:
    limiter = ApiLimiter(ceiling=1, rate=1000.0)
    order: list[int] = []

    async def request(n: int) -> None:
        async with limiter.slot():
            order.append(n)
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for n in range(10):
            tg.create_task(request(n))
    assert order == list(range(10))


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    limiter = ApiLimiter(ceiling=1, rate=1000.0)
    async with limiter.slot():
        waiter = asyncio.create_task(_enter(limiter))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(1), limiter.slot():
        assert limiter.in_flight == 1


async def _enter(limiter: ApiLimiter) -> None:
    async with limiter.slot():
        pass


async def test_no_more_than_per_turn_requests_are_admitted_per_loop_turn() -> None:
    limiter = ApiLimiter(ceiling=100, rate=1000.0, per_turn=4)
    go = asyncio.Event()

    async def request() -> None:
        async with limiter.slot():
            await go.wait()

    async with asyncio.TaskGroup() as tg:
        for _ in range(20):
            tg.create_task(request())
        seen = [limiter.admitted]
        while limiter.admitted < 20:
            await asyncio.sleep(0)
            seen.append(limiter.admitted)
        go.set()

    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(steps) <= 4
    assert limiter.peak_in_flight == 20
