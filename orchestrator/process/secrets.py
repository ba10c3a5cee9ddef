"""Secrets masked: the API key and token never reach a progress file, an event or a model.

The scheduler passes every event through `scrub_event`, whatever the agent's kind (a child
that prints its environment included); the Claude agent also masks tool results before the
model sees them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any, cast

from orchestrator.events import AgentEvent
from orchestrator.plan.model import SECRET_NAMES

REDACTED = "[REDACTED]"
MIN_SECRET = 8
"""Shorter values are not masked: masking "abc" everywhere would mangle ordinary text."""


def secret_values(env: Mapping[str, str] | None = None, *more: str | None) -> tuple[str, ...]:
    """The values to mask, longest first: the key and token from ``env`` and our environment."""
    values = {os.environ.get(n, "") for n in SECRET_NAMES}
    if env is not None:
        values |= {env.get(n, "") for n in SECRET_NAMES}
    values |= {m or "" for m in more}
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET), key=len, reverse=True))


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_event(event: AgentEvent, secrets: tuple[str, ...]) -> AgentEvent:
    """``event`` with every secret masked in its text fields (the same object if none was)."""
    changes: dict[str, str] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, str) and any(s in value for s in secrets):
            changes[f.name] = scrub_text(value, secrets)
    if not changes:
        return event
    result: AgentEvent = dataclasses.replace(cast(Any, event), **changes)
    return result
