"""A local fake of OpenAI's API (Chat Completions and Responses) that speaks the real wire format.

Tests point the real ``openai`` SDK (or the model gateway) at it; nothing reaches the
internet. It is an aiohttp server on 127.0.0.1 in the test's own event loop::

    async with FakeOpenAI([answer("hi", input_tokens=10)], api_key=KEY) as api:
        ...  # api.url ends with /v1, as OpenAI base URLs do

What it answers is scripted per request: a list of `OpenAIReply` values taken in order, or a
callable ``(path, body, index) -> OpenAIReply | None``; when the script runs out the default
is a short text answer. Wire formats, as OpenAI sends them:

- ``POST /v1/chat/completions``: a ``chat.completion`` JSON object, or for ``"stream": true``
  ``data: {chat.completion.chunk}`` events ending in ``data: [DONE]``; the usage-only chunk
  (``"choices": []``) is sent only when ``stream_options.include_usage`` is true, and then
  every chunk carries ``"usage": null`` before it.
- ``POST /v1/responses``: a ``response`` JSON object, or for ``"stream": true`` ``event:``
  / ``data:`` pairs (``response.created``, ``response.output_text.delta`` ...,
  ``response.completed`` whose ``response`` carries the usage).
- errors: ``{"error": {"message", "type", "param", "code"}}`` with the status.

Every request is recorded in ``api.requests`` (path, headers, JSON body).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from aiohttp import web

JSON: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class OpenAIReply:
    status: int = 200
    text: str = "OK"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    error_type: str = ""
    error_code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    trickle: float = 0.0
    """Seconds between two stream events."""
    chunk: int = 8
    """Characters of text per delta event."""
    drop_after: int | None = None
    """Close the connection after this many stream events."""

    def with_trickle(self, seconds: float, *, chunk: int = 8) -> OpenAIReply:
        return replace(self, trickle=seconds, chunk=chunk)

    def with_drop(self, after_events: int) -> OpenAIReply:
        return replace(self, drop_after=after_events)


def answer(
    text: str = "OK", *, input_tokens: int = 12, output_tokens: int = 3, cached_tokens: int = 0
) -> OpenAIReply:
    return OpenAIReply(
        text=text, input_tokens=input_tokens, output_tokens=output_tokens,
        cached_tokens=cached_tokens,
    )  # fmt: skip


def openai_error(
    status: int, error_type: str, message: str, *, code: str | None = None,
    headers: Mapping[str, str] = {},
) -> OpenAIReply:  # fmt: skip
    return OpenAIReply(
        status=status, text=message, error_type=error_type, error_code=code,
        headers=tuple(headers.items()),
    )  # fmt: skip


def too_many_requests(retry_after: float | None = 1) -> OpenAIReply:
    headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
    return openai_error(429, "requests", "Rate limit reached for requests", headers=headers)


def invalid_key() -> OpenAIReply:
    return openai_error(401, "invalid_request_error", "Incorrect API key provided",
                        code="invalid_api_key")  # fmt: skip


def no_quota() -> OpenAIReply:
    message = "You exceeded your current quota, please check your plan and billing details."
    return openai_error(429, "insufficient_quota", message, code="insufficient_quota")


Script: TypeAlias = Sequence[OpenAIReply] | Callable[[str, JSON, int], OpenAIReply | None]


@dataclass
class Recorded:
    path: str
    headers: Mapping[str, str]
    body: JSON
    received: float

    @property
    def bearer(self) -> str:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else ""


@dataclass
class FakeOpenAI:
    script_: Script = ()
    api_key: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _queue: list[OpenAIReply] = field(default_factory=list)
    _fn: Callable[[str, JSON, int], OpenAIReply | None] | None = None
    _count: itertools.count[int] = field(default_factory=itertools.count)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.script(self.script_)

    def script(self, script: Script) -> None:
        if callable(script):
            self._fn, self._queue = script, []
        else:
            self._fn, self._queue = None, list(script)

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._serve)
        app.router.add_post("/v1/responses", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                self._arrived.clear()
                await self._arrived.wait()

    def _next(self, path: str, body: JSON) -> OpenAIReply:
        index = next(self._count)
        reply = self._fn(path, body, index) if self._fn is not None else None
        if reply is None and self._queue:
            reply = self._queue.pop(0)
        return reply if reply is not None else answer()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body, time.monotonic()))
        self._arrived.set()
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            reply = invalid_key()
        else:
            reply = self._next(request.path, body)
        if reply.status != 200:
            error = {"message": reply.text, "type": reply.error_type, "param": None,
                     "code": reply.error_code}  # fmt: skip
            return web.json_response({"error": error}, status=reply.status,
                                     headers=dict(reply.headers))  # fmt: skip
        chat = request.path.endswith("/chat/completions")
        model = str(body.get("model", ""))
        if not body.get("stream"):
            whole = _chat_object(model, reply) if chat else _response_object(model, reply)
            return web.json_response(whole, headers=dict(reply.headers))
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **dict(reply.headers)}
        )
        await out.prepare(request)
        events = _chat_events(model, reply, body) if chat else _response_events(model, reply)
        for n, event in enumerate(events):
            if reply.drop_after is not None and n >= reply.drop_after:
                assert request.transport is not None
                request.transport.close()
                return out
            await out.write(event)
            if reply.trickle:
                await asyncio.sleep(reply.trickle)
        await out.write_eof()
        return out


def _pieces(reply: OpenAIReply) -> list[str]:
    return [reply.text[i : i + reply.chunk] for i in range(0, len(reply.text), reply.chunk)] or [""]


def _chat_usage(reply: OpenAIReply) -> JSON:
    return {
        "prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }  # fmt: skip


def _chat_object(model: str, reply: OpenAIReply) -> JSON:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text,
                     "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
        "usage": _chat_usage(reply),
    }  # fmt: skip


def _sse(data: JSON | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _chat_events(model: str, reply: OpenAIReply, body: JSON) -> list[bytes]:
    options = body.get("stream_options") or {}
    usage = bool(options.get("include_usage"))
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}  # fmt: skip
    extra: JSON = {"usage": None} if usage else {}

    def chunk(delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice], **extra})

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in _pieces(reply)]
    events.append(chunk({}, "stop"))
    if usage:
        events.append(_sse({**base, "choices": [], "usage": _chat_usage(reply)}))
    events.append(_sse("[DONE]"))
    return events


def _response_usage(reply: OpenAIReply) -> JSON:
    return {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _response_object(model: str, reply: OpenAIReply, *, done: bool = True) -> JSON:
    text = {"type": "output_text", "text": reply.text, "annotations": []}
    item = {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
            "content": [text]}  # fmt: skip
    return {
        "id": "resp_fake", "object": "response", "created_at": int(time.time()),
        "status": "completed" if done else "in_progress", "model": model,
        "output": [item] if done else [], "usage": _response_usage(reply) if done else None,
        "error": None, "incomplete_details": None,
    }  # fmt: skip


def _response_events(model: str, reply: OpenAIReply) -> list[bytes]:
    seq = itertools.count()

    def event(kind: str, **data: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **data}, kind)

    start = _response_object(model, reply, done=False)
    events = [event("response.created", response=start),
              event("response.in_progress", response=start)]  # fmt: skip
    for piece in _pieces(reply):
        events.append(event("response.output_text.delta", item_id="msg_fake", output_index=0,
                            content_index=0, delta=piece))  # fmt: skip
    events.append(event("response.output_text.done", item_id="msg_fake", output_index=0,
                        content_index=0, text=reply.text))  # fmt: skip
    events.append(event("response.completed", response=_response_object(model, reply)))
    return events


@contextlib.asynccontextmanager
async def fake_openai(
    script: Script = (), *, api_key: str | None = None
) -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(script, api_key=api_key) as api:
        yield api
