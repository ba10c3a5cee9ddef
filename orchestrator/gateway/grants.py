"""Per-attempt tokens: who may send requests through the gateway, and until when.

Every attempt of an agent that talks to a model gets a `Grant`: a random token (what the
agent's program uses as its API key), the attempt's deadline, the account its money counts
against, and where its events go. The token is good from the moment the attempt starts
until it ends; after that (or once the agent is cancelled) every request with it is refused.

A grant is written by the scheduler's thread (made, refused, closed) and read by the
gateway's; each change is one attribute assignment, which Python makes atomic.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from orchestrator.events import AgentEvent

TOKEN_PREFIX = "orch-gw-"
Refusal: TypeAlias = Literal["cancelled", "after_turn"]


@dataclass(frozen=True, slots=True)
class Access:
    """What an agent is given instead of the API key: the gateway's URL and its token, and
    which APIs the gateway passes on (those whose key the orchestrator holds)."""

    url: str
    token: str
    anthropic: bool = True
    openai: bool = False

    @property
    def openai_url(self) -> str:
        """The gateway as an OpenAI base URL (those end with ``/v1``)."""
        return self.url + "/v1"


@dataclass(slots=True, eq=False)
class Grant:
    """One attempt's right to use the gateway."""

    agent_id: str
    token: str
    deadline: float
    """``time.monotonic()`` after which the attempt is over: no retry waits past it."""
    emit: Callable[[AgentEvent], None]
    """The attempt's event sink; runs on the scheduler's loop (the gateway posts to it)."""
    account: str | None = None
    closed: bool = False
    refused: Refusal | None = None
    reason: str = ""
    told_stopped: bool = False
    """Whether the agent was told the run's model traffic is stopped (it is told once)."""
    in_flight: set[asyncio.Task[object]] = field(default_factory=set)
    """The gateway's handler tasks serving this grant now (gateway thread only)."""


def new_token() -> str:
    """A token no one can guess (192 random bits), recognisable in a leak."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_of(headers: object) -> str | None:
    """The token a request carries as ``x-api-key`` or ``Authorization: Bearer``."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    key = get("x-api-key")
    if key:
        return str(key).strip()
    auth = str(get("authorization") or "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None
