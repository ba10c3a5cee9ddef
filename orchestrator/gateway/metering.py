"""What a Messages API request may cost before it is sent, and what it used, read off the wire.

Pure and synchronous. Before forwarding, the gateway needs three fields of the request
(`RequestFacts`) and an upper bound of its cost: every byte of the body counted as input at
`CHARS_PER_TOKEN` (real text runs 3.5 to 4 characters a token, JSON syntax more), priced at
the dearest input rate, plus ``max_tokens`` of output. Afterwards it needs the usage the
answer reports: in a JSON message its ``usage``; in a stream the ``message_start`` event's
usage (input and cache tokens) and the last ``message_delta``'s (output so far).
`UsageScanner` reads that out of the raw SSE bytes as they pass, parsing only those events
(a stream is mostly ``content_block_delta`` events, which it skips after a prefix check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.gateway.pricing import TokenCount

CHARS_PER_TOKEN = 3
"""For the upper bound of a request's input (conservative: few texts are this dense)."""
MAX_SCAN = 1 << 20
"""An SSE event longer than this is not parsed (a usage event is a few hundred bytes)."""


class BadRequest(ValueError):
    """The body is not a Messages request the gateway can price; answered 400 locally."""


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str
    max_tokens: int
    stream: bool


def request_body(raw: bytes, *, missing_model: str) -> tuple[dict[str, Any], str]:
    """A request body as a JSON object and its model name, for every API the gateway speaks;
    `BadRequest` (saying ``missing_model`` when it names no model) when unusable."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(missing_model)
    return body, model


def request_facts(raw: bytes, *, counting: bool = False) -> RequestFacts:
    """Model, ``max_tokens`` and ``stream`` of a request body; `BadRequest` when unusable.

    ``counting``: a ``count_tokens`` request, which has no ``max_tokens``.
    """
    body, model = request_body(raw, missing_model="model: Field required")
    max_tokens = body.get("max_tokens", 0 if counting else None)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise BadRequest("max_tokens: Field required (a whole number)")
    return RequestFacts(model, max_tokens, bool(body.get("stream")))


def input_estimate(raw: bytes) -> int:
    """Input tokens a body of this size holds at most (by `CHARS_PER_TOKEN`)."""
    return len(raw) // CHARS_PER_TOKEN + 1


def tokens_of(usage: Any) -> TokenCount:
    """The API's ``usage`` object as a `TokenCount`; absent or odd fields count 0."""
    if not isinstance(usage, dict):
        return TokenCount()
    creation = usage.get("cache_creation")
    one_hour = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, dict) else 0
    return TokenCount(
        input=_count(usage.get("input_tokens")),
        output=_count(usage.get("output_tokens")),
        cache_write=_count(usage.get("cache_creation_input_tokens")),
        cache_write_1h=_count(one_hour),
        cache_read=_count(usage.get("cache_read_input_tokens")),
    )


def message_usage(raw: bytes) -> TokenCount:
    """The usage of a non-streamed answer (a JSON message); zero if it has none."""
    try:
        body = json.loads(raw)
    except ValueError:
        return TokenCount()
    return tokens_of(body.get("usage")) if isinstance(body, dict) else TokenCount()


def error_of(raw: bytes) -> tuple[str, str]:
    """``(type, message)`` of an API error body (Anthropic's ``{"type":"error","error":{...}}``
    or OpenAI's ``{"error":{...}}``)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return "", raw[:300].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("type") or ""), " ".join(str(error.get("message") or "").split())[:300]


class UsageScanner:
    """Feed it a stream's bytes as they pass; ``tokens`` is the usage reported so far.

    ``error`` is the type of an ``event: error`` the stream carried (``overloaded_error``...).
    """

    __slots__ = ("_buf", "_start", "error", "output", "started")

    def __init__(self) -> None:
        self._buf = b""
        self._start = TokenCount()
        self.output = 0
        self.started = False
        self.error: str | None = None

    @property
    def tokens(self) -> TokenCount:
        s = self._start
        return TokenCount(s.input, max(self.output, s.output), s.cache_write, s.cache_write_1h,
                          s.cache_read)  # fmt: skip

    def feed(self, chunk: bytes) -> None:
        data = self._buf + chunk if self._buf else chunk
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            self._event(data[start:end])
            start = end + 2
        rest = data[start:]
        self._buf = rest if len(rest) <= MAX_SCAN else b""

    def _event(self, block: bytes) -> None:
        block = block.lstrip(b"\r\n")
        if not block.startswith((b"event: message_", b"event: error", b"event:message_")):
            return
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                self._data(line[5:].strip())
                return

    def _data(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            self._start = tokens_of(message.get("usage") if isinstance(message, dict) else None)
            self.started = True
        elif kind == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict):
                self.output = max(self.output, _count(usage.get("output_tokens")))
                if usage.get("input_tokens") is not None:  # newer streams repeat the input
                    later = tokens_of(usage)
                    s = self._start
                    self._start = TokenCount(
                        max(s.input, later.input), s.output, max(s.cache_write, later.cache_write),
                        s.cache_write_1h, max(s.cache_read, later.cache_read),
                    )  # fmt: skip
        elif kind == "error":
            error = data.get("error")
            self.error = str(error.get("type") or "error") if isinstance(error, dict) else "error"


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)
