"""OpenAI's wire formats as the gateway needs them: what a request may cost, what it used.

Pure and synchronous, the counterpart of `orchestrator.gateway.metering` for the two
OpenAI-style APIs the coding agents use: Chat Completions (``POST /v1/chat/completions``,
aider through litellm) and Responses (``POST /v1/responses``, codex).

**Before forwarding** (`prepare`): the model and the output cap. Neither API requires a cap
(``max_completion_tokens`` / ``max_tokens``, ``max_output_tokens``), and without one no
worst case exists to reserve, so the gateway sets one when the request has none
(``default_output``, a `GatewaySettings` knob) and reserves that. A streamed Chat
Completions request reports its usage only when asked (``stream_options.include_usage``):
the gateway asks, and when the client had not, drops that final usage-only chunk from what
the client receives (`UsageChunkFilter`), so the client sees the stream it asked for.

**Afterwards** (`usage_of`, `OpenAIUsageScanner`): Chat Completions report
``prompt_tokens`` / ``completion_tokens``, Responses ``input_tokens`` / ``output_tokens``
(in ``response.completed``, ``response.incomplete`` or ``response.failed`` when streamed);
both count cached input inside the input and report it as ``cached_tokens``, and reasoning
tokens inside the output. A stream is scanned only for events that carry a usage object
(``"usage":{``); the deltas are passed by after one substring search.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from orchestrator.gateway.metering import BadRequest, RequestFacts, request_body
from orchestrator.gateway.pricing import TokenCount

OpenAIApi: TypeAlias = Literal["chat", "responses"]
MAX_SCAN = 1 << 20
"""An SSE event longer than this is not parsed (a usage event is at most a few KiB, unless
a Responses stream repeats its whole output in ``response.completed``: then it is parsed
if under this size, and counted from nothing otherwise)."""
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
"""The end of an SSE event: a blank line, whichever line ending the server uses."""
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready for upstream: its facts and the body to send."""

    facts: RequestFacts
    raw: bytes
    hide_usage: bool = False
    """The gateway asked for the stream's usage chunk; the client did not: drop it."""


def prepare(api: OpenAIApi, raw: bytes, *, default_output: int) -> Prepared:
    """The request's facts and the body to forward (an output cap and, for a streamed Chat
    Completions request, ``include_usage`` added when missing); `BadRequest` when unusable."""
    body, model = request_body(raw, missing_model="model: a model name is required")
    names = (
        ("max_output_tokens",) if api == "responses" else ("max_completion_tokens", "max_tokens")
    )
    cap: int | None = None
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"{name}: a whole number of at least 1")
        cap = value if cap is None else min(cap, value)
    changed = False
    if cap is None:
        cap = default_output
        body[names[0]] = cap
        changed = True
    stream = bool(body.get("stream"))
    hide_usage = False
    if api == "chat" and stream:
        options = body.get("stream_options")
        options = options if isinstance(options, dict) else {}
        if options.get("include_usage") is not True:
            body["stream_options"] = {**options, "include_usage": True}
            hide_usage = changed = True
    if changed:
        raw = json.dumps(body, separators=(",", ":")).encode()
    return Prepared(RequestFacts(model, cap, stream), raw, hide_usage)


def tokens_of(usage: Any) -> TokenCount:
    """A Chat Completions or Responses ``usage`` object as a `TokenCount` (cached input
    apart from the rest); absent or odd fields count 0."""
    if not isinstance(usage, dict):
        return TokenCount()
    total_in = _count(usage.get("input_tokens", usage.get("prompt_tokens")))
    output = _count(usage.get("output_tokens", usage.get("completion_tokens")))
    details = usage.get("input_tokens_details", usage.get("prompt_tokens_details"))
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, total_in)
    return TokenCount(input=total_in - cached, output=output, cache_read=cached)


def usage_of(raw: bytes) -> TokenCount:
    """The usage of a non-streamed answer (either API); zero if it has none."""
    try:
        body = json.loads(raw)
    except ValueError:
        return TokenCount()
    return tokens_of(_usage_in(body))


def _usage_in(data: Any) -> Any:
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if isinstance(usage, dict):
        return usage
    response = data.get("response")  # response.completed / .incomplete / .failed
    return response.get("usage") if isinstance(response, dict) else None


class OpenAIUsageScanner:
    """Feed it a stream's bytes as they pass; ``tokens`` is the last usage it carried.

    ``error`` is set when the stream carried an error event (its type or code).
    """

    __slots__ = ("_buf", "_tokens", "error", "started")

    def __init__(self) -> None:
        self._buf = b""
        self._tokens = TokenCount()
        self.started = False
        self.error: str | None = None

    @property
    def tokens(self) -> TokenCount:
        return self._tokens

    def feed(self, chunk: bytes) -> None:
        data = self._buf + chunk if self._buf else chunk
        start = 0
        while (boundary := _BOUNDARY.search(data, start)) is not None:
            block = data[start : boundary.start()]
            if _USAGE.search(block) or b'"error"' in block:
                self._event(block)
            start = boundary.end()
        rest = data[start:]
        self._buf = rest if len(rest) <= MAX_SCAN else b""

    def _event(self, block: bytes) -> None:
        payload = b"".join(
            line[5:].strip() for line in block.splitlines() if line.startswith(b"data:")
        )
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        usage = _usage_in(data)
        if isinstance(usage, dict):
            self._tokens = tokens_of(usage)
            self.started = True
        error = data.get("error")
        if data.get("type") == "error" or isinstance(error, dict):
            source = error if isinstance(error, dict) else data
            self.error = str(source.get("type") or source.get("code") or "error")


class UsageChunkFilter:
    """Drops the usage-only chunk (``"choices": []`` with a usage object) from a Chat
    Completions stream whose client did not ask for it; everything else passes unchanged."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._buf + chunk if self._buf else chunk
        out: list[bytes] = []
        start = 0
        while (boundary := _BOUNDARY.search(data, start)) is not None:
            block = data[start : boundary.end()]
            if not (_EMPTY_CHOICES.search(block) and _USAGE.search(block)):
                out.append(block)
            start = boundary.end()
        self._buf = data[start:]
        if len(self._buf) > MAX_SCAN:  # not an SSE stream after all: stop holding it back
            out.append(self._buf)
            self._buf = b""
        return b"".join(out)

    def rest(self) -> bytes:
        """What is held back at the end of the stream (an unterminated last event)."""
        rest, self._buf = self._buf, b""
        return rest


def error_body(error_type: str, message: str, code: str | None = None) -> bytes:
    """An OpenAI-shaped error body (``{"error": {"message", "type", "param", "code"}}``)."""
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


def stream_error(api: OpenAIApi, message: str) -> bytes:
    """An error event for a stream already under way (its headers are gone)."""
    if api == "responses":
        event = {"type": "error", "code": "server_error", "message": message, "param": None}
        return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"
    return b"data: " + error_body("server_error", message) + b"\n\n"


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)
