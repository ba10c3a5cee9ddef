"""Retries and pacing for API requests: the one governor of every agent's model requests.

The model gateway (`orchestrator.gateway.proxy`) passes every request of the run through one
`ApiLimiter` on its own loop; the claude agent keeps a second one as a local pacer of how
many requests its SDK builds per turn of the scheduler's loop.

Two layers:

- a pure core, testable without an event loop: which failures are retried and after how
  long (`RetryPolicy`, `retry_delay`: ``retry-after`` honoured up to a cap, otherwise
  exponential backoff with full jitter), the AIMD arithmetic of the run's API concurrency
  (`Aimd`: +1 per success, halved on overload, never under the floor) and a token bucket of
  requests per second (`TokenBucket`);
- `ApiLimiter`, the async gate every request passes: a semaphore whose capacity is the AIMD
  limit, behind the token bucket and behind a run-wide hold that a 429's ``retry-after``
  sets. Requests are admitted first come, first served, a few per turn of the event loop
  (so that 200 agents starting together do not hold the loop while the SDK builds 200
  requests).

A storm (429s, 529s, errors mid-stream) thus slows the whole run down instead of failing
its agents: each overloaded answer lowers the concurrency for everyone, each success raises
it again. Only failures of requests admitted since the last decrease count towards the next
one (an *epoch*): a wave of 50 in-flight requests failing together halves the limit once,
not 50 times, as TCP reacts once per round trip.

Which answer is which failure is decided by the callers (`orchestrator.gateway.replies` for
upstream answers, `orchestrator.agents.claude.sdk` for the SDK's exceptions); this module
sees `ApiFailure` values.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

FailureKind: TypeAlias = Literal["rate_limit", "overload", "transient", "fatal"]
"""``rate_limit``: 429. ``overload``: 529, 503, an error event mid-stream: lowers concurrency.
``transient``: timeouts, dropped connections, other 5xx: retried, concurrency unchanged.
``fatal``: 400, 401, 403, 404, billing: never retried."""


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """One failed request, classified. ``message`` is one line for the progress file."""

    kind: FailureKind
    message: str
    retry_after: float | None = None
    """Seconds the server asked us to wait (``retry-after`` / ``retry-after-ms``)."""
    run_wide: bool = False
    """Fatal for every request of the run (bad key, no credit), not only this one."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried."""

    max_attempts: int = 8
    """Requests sent for one turn at most, the first included."""
    base_delay: float = 0.5
    max_delay: float = 30.0
    """Backoff ceiling: attempt n waits uniformly in [0, min(max_delay, base * 2**n)]."""
    retry_after_cap: float = 60.0
    """A server's ``retry-after`` is honoured up to this many seconds."""


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from ``retry-after-ms``, or ``retry-after`` (seconds or an HTTP date); else None.

    ``now`` is the wall clock for the date form (default: ``time.time()``).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def backoff(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter for retry number ``attempt`` (0 for the first)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt, 62))
    return rand() * ceiling


def retry_delay(
    failure: ApiFailure,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before sending again, or None when the request must not be retried.

    ``attempt`` counts the requests already sent for this turn, minus one (0 after the
    first failure). A ``retry-after`` wins over backoff (capped); fatal failures and the
    last allowed attempt give None.
    """
    if failure.kind == "fatal" or attempt + 1 >= policy.max_attempts:
        return None
    if failure.retry_after is not None and math.isfinite(failure.retry_after):
        return min(max(failure.retry_after, 0.0), policy.retry_after_cap)
    return backoff(attempt, policy, rand)


@dataclass(slots=True)
class Aimd:
    """Additive increase, multiplicative decrease of a concurrency limit."""

    ceiling: int
    floor: int = 1
    increase: float = 1.0
    """Added to the limit per successful request."""
    decrease: float = 0.5
    """The limit is multiplied by this on overload (once per epoch)."""
    limit: float = field(init=False)
    epoch: int = 0
    """Bumped at every decrease; requests remember the epoch they were admitted in."""
    lowest: float = field(init=False)
    decreases: int = 0

    def __post_init__(self) -> None:
        self.ceiling = max(self.ceiling, self.floor)
        self.limit = float(self.ceiling)
        self.lowest = self.limit

    @property
    def capacity(self) -> int:
        """Requests that may be in flight now."""
        return max(self.floor, math.floor(self.limit))

    def on_success(self) -> None:
        self.limit = min(float(self.ceiling), self.limit + self.increase)

    def on_overload(self, epoch: int) -> bool:
        """Lower the limit if the failed request was admitted in the current epoch."""
        if epoch != self.epoch:
            return False
        self.limit = max(float(self.floor), self.limit * self.decrease)
        self.lowest = min(self.lowest, self.limit)
        self.epoch += 1
        self.decreases += 1
        return True


@dataclass(slots=True)
class TokenBucket:
    """``rate`` requests per second on average, ``burst`` at once; plus a hold-until time."""

    rate: float
    burst: float
    now: float
    tokens: float = field(init=False)
    held_until: float = 0.0

    def __post_init__(self) -> None:
        self.rate = max(self.rate, 1e-9)
        self.burst = max(self.burst, 1.0)
        self.tokens = self.burst

    def delay(self, now: float) -> float:
        """Seconds until one request may go (0: now)."""
        self._refill(now)
        hold = max(self.held_until - now, 0.0)
        need = 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate
        return max(hold, need)

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def hold(self, now: float, seconds: float) -> None:
        """Let nothing through for ``seconds`` (extends, never shortens, a hold)."""
        self.held_until = max(self.held_until, now + seconds)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(now - self.now, 0.0) * self.rate)
        self.now = now


@dataclass(frozen=True, slots=True)
class Permit:
    """One admitted request; report its outcome to the limiter that gave it."""

    epoch: int


Outcome: TypeAlias = Literal["ok", "slow_down", "other"]


class ApiLimiter:
    """The run's gate for API requests: adjustable concurrency, a rate, a shared hold.

    ``async with limiter.slot() as permit:`` waits its turn (first come, first served), then
    holds one unit of capacity until the block ends; inside, ``limiter.report(permit, ...)``
    says how the request went. Figures for tests and the report: `capacity` (the AIMD limit
    now), `lowest` (the lowest it went), `in_flight` and `peak_in_flight`.

    At most ``per_turn`` requests are admitted per turn of the event loop: building and
    sending a request costs the SDK a few milliseconds of CPU, and 200 agents admitted in
    one turn would hold the loop for a second; 16 a turn keeps turns short and still puts
    200 requests on the wire in a dozen turns.
    """

    def __init__(
        self,
        *,
        ceiling: int,
        rate: float = 50.0,
        burst: float | None = None,
        floor: int = 1,
        increase: float = 1.0,
        decrease: float = 0.5,
        per_turn: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aimd = Aimd(ceiling=ceiling, floor=floor, increase=increase, decrease=decrease)
        self.clock = clock
        self.bucket = TokenBucket(rate, burst if burst is not None else max(rate, ceiling), clock())
        self.per_turn = max(per_turn, 1)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.admitted = 0
        self._waiters: deque[asyncio.Future[Permit]] = deque()
        self._this_turn = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def capacity(self) -> int:
        return self.aimd.capacity

    @property
    def ceiling(self) -> int:
        return self.aimd.ceiling

    @property
    def lowest(self) -> int:
        return max(self.aimd.floor, math.floor(self.aimd.lowest))

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Permit]:
        permit = await self._acquire()
        try:
            yield permit
        finally:
            self.in_flight -= 1
            self._pump()

    def report(self, permit: Permit, outcome: Outcome, *, retry_after: float | None = None) -> None:
        """How the request went: ``ok`` raises the limit, ``slow_down`` (429, 529, an error
        event) lowers it; a ``retry_after`` holds every new request of the run that long."""
        if outcome == "ok":
            self.aimd.on_success()
        elif outcome == "slow_down":
            self.aimd.on_overload(permit.epoch)
        if retry_after is not None and retry_after > 0:
            self.bucket.hold(self.clock(), retry_after)
        self._pump()

    async def _acquire(self) -> Permit:
        if not self._waiters and self._delay() == 0.0:
            return self._admit()
        waiter: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._pump()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.in_flight -= 1  # admitted, but cancelled before it could run: give it back
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._pump()
            raise

    def _delay(self) -> float:
        """0 when a request may be admitted now; inf while only a release can help."""
        if self.in_flight >= self.aimd.capacity:
            return math.inf
        if self._this_turn >= self.per_turn:
            return math.inf  # the next turn admits more (see _admit)
        return self.bucket.delay(self.clock())

    def _admit(self) -> Permit:
        self.bucket.take(self.clock())
        self.in_flight += 1
        self.admitted += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self._this_turn == 0:
            asyncio.get_running_loop().call_soon(self._new_turn)
        self._this_turn += 1
        return Permit(self.aimd.epoch)

    def _new_turn(self) -> None:
        self._this_turn = 0
        self._pump()

    def _pump(self) -> None:
        """Admit waiters, first come first served, as far as the limits allow now."""
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()  # cancelled while waiting
                continue
            delay = self._delay()
            if delay > 0:
                if delay != math.inf and self._timer is None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(delay, self._on_timer)
                return
            self._waiters.popleft().set_result(self._admit())

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()
