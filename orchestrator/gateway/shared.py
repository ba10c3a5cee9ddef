"""What the gateway's thread and the scheduler's share: settings, grants, the ledger, flags.

The scheduler's side writes (grants made and closed, a cancel, the fence); the gateway's side
reads them per request and answers back only by *posting* callbacks to the scheduler's loop
(``call_soon_threadsafe``), so neither loop ever blocks on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.gateway.grants import Grant, token_of
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.limiter import ApiLimiter, RetryPolicy
from orchestrator.gateway.pricing import PriceTable

DEFAULT_UPSTREAM = "https://api.anthropic.com"
DEFAULT_OPENAI_UPSTREAM = "https://api.openai.com/v1"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Knobs of the gateway; the defaults suit real runs, tests shorten them."""

    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    """Upstream silence tolerated while reading (the API pings idle streams)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff and the ``retry-after`` cap (its ``max_attempts`` is not used: 429 and 529
    are retried while the attempt's deadline allows, other transient failures
    ``transient_tries`` times)."""
    transient_tries: int = 4
    requests_per_second: float = 50.0
    ceiling: int = 0
    """Requests in flight upstream at most (AIMD's ceiling); 0: four per concurrent agent."""
    drain: float = 2.0
    """When an attempt ends, how long its requests in flight get to finish being cancelled."""
    max_body: int = 64 * 1024 * 1024
    host: str = "127.0.0.1"
    """Where it listens, and the address agents are given: loopback, unless the run's agents
    run on cluster nodes (then this machine's address on the cluster's network)."""
    unix: str | None = None
    """Where it also listens on a Unix socket (sandboxes with ``network: gateway`` reach it
    there: they have no network of their own); None: not at all."""
    default_output: int = 32_768
    """The output cap the gateway sets on an OpenAI-style request that has none (neither
    API requires one; without it no worst case could be reserved)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where requests go and the credential they carry there (never shown in a repr)."""

    url: str
    credential: tuple[str, str] = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Upstream | None:
        """From ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``,
        sent as a bearer token); None when neither credential is set."""
        url = env.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM
        key, token = env.get("ANTHROPIC_API_KEY"), env.get("ANTHROPIC_AUTH_TOKEN")
        if key:
            return cls(url, ("x-api-key", key))
        if token:
            return cls(url, ("authorization", f"Bearer {token}"))
        return None

    @classmethod
    def openai_from_env(cls, env: Mapping[str, str]) -> Upstream | None:
        """From ``OPENAI_BASE_URL`` (with its ``/v1``) and ``OPENAI_API_KEY``; None without
        the key."""
        url = env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_UPSTREAM
        key = env.get("OPENAI_API_KEY")
        return cls(url, ("authorization", f"Bearer {key}")) if key else None


class Hooks(Protocol):
    """What the gateway asks of the scheduler; each runs on the scheduler's loop."""

    def on_after_turn(self, agent_id: str) -> None:
        """The agent's turn is over (``cancel --after-turn``): stop it now."""

    def on_stopped(self, reason: str) -> None:
        """An auth or billing failure stopped the run's model traffic (called once)."""


class Shared:
    """The state both threads see. Plain attributes: each write is one atomic assignment."""

    def __init__(
        self,
        *,
        upstream: Upstream | None,
        openai: Upstream | None = None,
        ledger: Ledger,
        prices: PriceTable,
        hooks: Hooks,
        settings: GatewaySettings,
        ceiling: int,
        main: asyncio.AbstractEventLoop,
    ) -> None:
        self.upstream = upstream
        """Anthropic's API (None: the run holds no Anthropic credential)."""
        self.openai = openai
        """An OpenAI-compatible API (None: the run holds no OpenAI key)."""
        self.ledger = ledger
        self.prices = prices
        self.hooks = hooks
        self.settings = settings
        self.ceiling = max(ceiling, 1)
        self.main = main
        self.grants: dict[str, Grant] = {}
        """By token."""
        self.fence: str | None = None
        self.stopped: str | None = None
        """Why the run's model traffic is stopped (a 401, 403 or billing failure)."""
        self.limiter: ApiLimiter | None = None
        """The gateway thread's limiter, for figures (its capacity, lowest, peak)."""
        self.ahead: Callable[[int], None] | None = None
        """Set by the gateway's thread, called on its loop: keep this many connections to
        the Anthropic upstream open ahead of requests (one per grant)."""

    def grant_of(self, headers: object) -> Grant | None:
        token = token_of(headers)
        return self.grants.get(token) if token else None

    def post(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the scheduler's loop, soon, in the order posted."""
        self.main.call_soon_threadsafe(callback, *args)

    def stop_traffic(self, reason: str) -> None:
        """Refuse every request from now on; tell the scheduler once."""
        if self.stopped is None:
            self.stopped = reason
            self.post(self.hooks.on_stopped, reason)
