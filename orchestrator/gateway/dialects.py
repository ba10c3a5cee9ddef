"""The APIs the gateway speaks, side by side: which upstream each goes to and in what words.

Three dialects share one path through the gateway (`orchestrator.gateway.proxy`: admit,
reserve, forward, meter, settle) and differ only in what this module answers for them:

==============  =====================================  ==========  =====================
dialect         paths                                  upstream    used by
==============  =====================================  ==========  =====================
``anthropic``   ``/v1/messages``, ``.../count_tokens``  Anthropic   claude, claude-code,
                                                                   aider (claude models)
``chat``        ``/v1/chat/completions``               OpenAI      aider (openai models)
``responses``   ``/v1/responses``                      OpenAI      codex
==============  =====================================  ==========  =====================

Anthropic's base URLs have no ``/v1`` (the client adds it), OpenAI's end with it (the client
adds ``/chat/completions``): the path sent upstream is the Anthropic base URL plus the whole
path, or the OpenAI base URL plus the path after ``/v1``.

Pure: no aiohttp here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from orchestrator.gateway import openai_wire
from orchestrator.gateway.metering import UsageScanner, message_usage, request_facts
from orchestrator.gateway.openai_wire import OpenAIUsageScanner, Prepared, UsageChunkFilter
from orchestrator.gateway.pricing import TokenCount

DialectName: TypeAlias = Literal["anthropic", "chat", "responses"]
UpstreamName: TypeAlias = Literal["anthropic", "openai"]


class Scanner(Protocol):
    """Reads the usage off a stream as it passes."""

    error: str | None

    def feed(self, chunk: bytes) -> None: ...

    @property
    def tokens(self) -> TokenCount: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: DialectName
    upstream: UpstreamName
    prepare: Callable[[bytes, bool, int], Prepared]
    """``(body, counting, default_output)`` -> what to forward; raises `BadRequest`."""
    usage_of: Callable[[bytes], TokenCount]
    scanner: Callable[[], Scanner]
    overloaded: str
    """The stream error type that means "overloaded" (lowers the run's concurrency)."""

    @property
    def openai(self) -> bool:
        return self.upstream == "openai"

    def upstream_path(self, path_qs: str) -> str:
        """What to append to the upstream's base URL."""
        if self.openai and path_qs.startswith("/v1/"):
            return path_qs[3:]
        return path_qs

    def stream_filter(self, prepared: Prepared) -> UsageChunkFilter | None:
        return UsageChunkFilter() if prepared.hide_usage else None


def _anthropic(raw: bytes, counting: bool, default_output: int) -> Prepared:
    return Prepared(request_facts(raw, counting=counting), raw)


def _chat(raw: bytes, counting: bool, default_output: int) -> Prepared:
    return openai_wire.prepare("chat", raw, default_output=default_output)


def _responses(raw: bytes, counting: bool, default_output: int) -> Prepared:
    return openai_wire.prepare("responses", raw, default_output=default_output)


ANTHROPIC = Dialect(
    "anthropic", "anthropic", _anthropic, message_usage, UsageScanner, "overloaded_error"
)
CHAT = Dialect("chat", "openai", _chat, openai_wire.usage_of, OpenAIUsageScanner, "server_error")
RESPONSES = Dialect(
    "responses", "openai", _responses, openai_wire.usage_of, OpenAIUsageScanner, "server_error"
)
