"""A local fake of Anthropic's Messages API that speaks the real wire format.

Tests point the real ``anthropic`` SDK at it (``base_url=api.url``); nothing reaches the internet.
It is plain asyncio: raw HTTP/1.1 over ``asyncio.start_server`` on 127.0.0.1, keep-alive,
``Content-Length`` bodies for JSON and ``Transfer-Encoding: chunked`` for server-sent events.

Three ways to run it:

- in the test's own event loop: ``async with FakeMessagesAPI([text("hi")]) as api`` (or the
  ``fake_api`` fixture below);
- in a background thread, for synchronous tests that start the CLI: ``with serve_in_thread(...)``;
- as a separate process: ``python -m tests.fakeapi --port-file F --script S.json --log L.jsonl``
  (or the ``spawn_fake_api`` helper), which prints ``listening <url>`` once it accepts.

What it answers is scripted per request: a list of `Reply` values taken in order, or a callable
``(request_json, index) -> Reply | None``; when the script runs out (or the callable returns
``None``) the ``default`` reply is used (a text reply, ``stop_reason: end_turn``). Every
request is recorded in ``api.requests`` with its headers, JSON body and arrival time, and
``api.peak_in_flight`` is the largest number of requests being answered at the same moment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import http
import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeAlias

JSON: TypeAlias = dict[str, Any]

# --- what to answer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one request; build it with the helpers, adjust it with ``with_*``.

    A success reply (``status`` 200) is a message: the same reply becomes a JSON message for a
    plain request and a stream of server-sent events for ``"stream": true``. An error reply is
    an HTTP status with the API's error body. Event counts (``stall_after``, ``drop_after``,
    ``error_after``) count SSE events, ``ping`` included; for a non-stream request any of them
    means "headers, then that failure".
    """

    status: int = 200
    content: tuple[JSON, ...] = ()
    stop_reason: str | None = "end_turn"
    usage: Mapping[str, int] = field(default_factory=dict)
    error_type: str = ""
    error_message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    """Seconds to wait before sending the status line and headers (on top of the latency)."""
    trickle: float = 0.0
    """Seconds to wait between two SSE events."""
    chunk: int = 16
    """Characters of text (or of tool-input JSON) per delta event."""
    stall_after: int | None = None
    """Send headers and this many events, then nothing until the client hangs up."""
    drop_after: int | None = None
    """Send headers and this many events, then close the connection mid-body."""
    error_after: int | None = None
    """Send this many events, then an ``event: error`` with ``error_type`` and end the stream."""

    def with_delay(self, seconds: float) -> Reply:
        return replace(self, delay=seconds)

    def with_trickle(self, seconds: float, *, chunk: int | None = None) -> Reply:
        return replace(self, trickle=seconds, chunk=self.chunk if chunk is None else chunk)

    def with_stall(self, after_events: int = 0) -> Reply:
        return replace(self, stall_after=after_events)

    def with_drop(self, after_events: int = 0) -> Reply:
        return replace(self, drop_after=after_events)

    def with_headers(self, **headers: str) -> Reply:
        extra = tuple((k.replace("_", "-").lower(), v) for k, v in headers.items())
        return replace(self, headers=self.headers + extra)

    def with_usage(self, **usage: int) -> Reply:
        return replace(self, usage={**self.usage, **usage})


def text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: Mapping[str, Any], *, id: str | None = None) -> JSON:
    """A ``tool_use`` content block; without ``id`` the server makes one per request."""
    block: JSON = {"type": "tool_use", "name": name, "input": dict(input)}
    if id is not None:
        block["id"] = id
    return block


def message(*blocks: JSON, stop_reason: str = "end_turn", **usage: int) -> Reply:
    """A reply made of any content blocks (``text_block``, ``tool_use_block``)."""
    return Reply(content=tuple(blocks), stop_reason=stop_reason, usage=usage)


def text(text: str = "OK", *, stop_reason: str = "end_turn", **usage: int) -> Reply:
    """A plain text answer."""
    return message(text_block(text), stop_reason=stop_reason, **usage)


def tool_use(
    name: str,
    input: Mapping[str, Any],
    *,
    id: str | None = None,
    text: str | None = None,
    **usage: int,
) -> Reply:
    """The model calls one tool (optionally after some text); ``stop_reason`` is ``tool_use``."""
    blocks = ([text_block(text)] if text else []) + [tool_use_block(name, input, id=id)]
    return message(*blocks, stop_reason="tool_use", **usage)


ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def status_error(
    status: int, error_type: str, message: str, *, headers: Mapping[str, str] = {}
) -> Reply:
    """An HTTP error exactly as the API sends it: ``{"type":"error","error":{...}}``."""
    return Reply(
        status=status,
        error_type=error_type,
        error_message=message,
        headers=tuple((k.lower(), v) for k, v in headers.items()),
    )


def rate_limited(retry_after: float | None = 1) -> Reply:
    """429 ``rate_limit_error``, with a ``retry-after`` header (seconds) unless ``None``."""
    headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
    return status_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        headers=headers,
    )


def overloaded() -> Reply:
    return status_error(529, "overloaded_error", "Overloaded")


def authentication_error(message: str = "invalid x-api-key") -> Reply:
    return status_error(401, "authentication_error", message)


def invalid_request(message: str = "messages: field required") -> Reply:
    return status_error(400, "invalid_request_error", message)


def api_error(message: str = "Internal server error") -> Reply:
    return status_error(500, "api_error", message)


def mid_stream_error(
    after_events: int = 4,
    *,
    error_type: str = "overloaded_error",
    message: str = "Overloaded",
    partial_text: str = "Let me look at",
) -> Reply:
    """A stream that starts well, then sends ``event: error`` (HTTP status stays 200).

    For a non-stream request the same reply is the matching HTTP error (529 for overloaded).
    """
    return replace(
        text(partial_text), error_after=after_events, error_type=error_type, error_message=message
    )


Responder: TypeAlias = Callable[[JSON, int], "Reply | None"]
Script: TypeAlias = Sequence[Reply] | Responder


# --- what was asked -----------------------------------------------------------------------------

SECRET_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; header names are lower case."""

    index: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    received: float
    """``time.monotonic()`` when the request was fully read."""
    connection: int

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def api_key(self) -> str | None:
        """The key sent as ``x-api-key`` or (as SDK 2.x does) ``Authorization: Bearer``."""
        return _api_key(self.headers)

    def to_json(self) -> JSON:
        """For the request log of a separate process: secret headers become a short hash."""
        headers = {
            k: (
                "sha256:" + hashlib.sha256(v.encode()).hexdigest()[:16]
                if k in SECRET_HEADERS
                else v
            )
            for k, v in self.headers.items()
        }
        return {
            "index": self.index,
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body,
            "received": self.received,
            "connection": self.connection,
        }


class _BadRequest(Exception):
    """The bytes on the wire are not an HTTP request we can answer; the connection is closed."""


# --- the server ---------------------------------------------------------------------------------


class FakeMessagesAPI:
    """The fake Messages API server; an async context manager that owns its connections."""

    def __init__(
        self,
        script: Script = (),
        *,
        default: Reply | None = None,
        latency: float = 0.0,
        gather: int = 0,
        api_key: str | None = None,
        validate: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        self._queue: deque[Reply] = deque()
        self._responder: Responder | None = None
        self.script(script)
        self.default = default or text("OK")
        self.latency = latency
        self.gather = gather
        """Hold every answer until this many requests have arrived (``latency``: at most that
        long): a server whose answers all wait proves the requests were in flight together."""
        self.api_key = api_key
        """When set, a request with another key gets 401 ``authentication_error``."""
        self.validate = validate
        """Reject requests the real API would reject (missing fields, unanswered tool_use)."""
        self.host = host
        self.port = port
        self.on_request = on_request
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.open_connections = 0
        self.peak_connections = 0
        self._conn_ids = itertools.count(1)
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._arrived: asyncio.Condition | None = None

    # scripting

    def script(self, script: Script) -> None:
        """Replace what the server answers: a list of replies in order, or a callable."""
        self._queue.clear()
        self._responder = None
        if callable(script):
            self._responder = script
        else:
            self._queue.extend(script)

    def enqueue(self, *replies: Reply) -> None:
        """Add replies to the end of the scripted list."""
        self._queue.extend(replies)

    def _next_reply(self, body: JSON, index: int) -> Reply:
        if self._responder is not None:
            return self._responder(body, index) or self.default
        return self._queue.popleft() if self._queue else self.default

    # lifecycle

    @property
    def url(self) -> str:
        """The ``base_url`` to give the SDK (it appends ``/v1/messages``)."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> FakeMessagesAPI:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self.port, backlog=2048, limit=1 << 20
            )
            stack.push_async_callback(self._shutdown)
        except BaseException:
            await stack.__aexit__(*sys.exc_info())
            raise
        self._stack = stack
        self._arrived = asyncio.Condition()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._conn_tasks):
            task.cancel()  # the TaskGroup, exited right after this, waits for them

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tg is None:  # pragma: no cover - start_server only calls this while we run
            writer.transport.abort()
            return
        task = self._tg.create_task(self._serve_connection(reader, writer))
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    async def wait_for_requests(
        self,
        count: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a default bound: a broken test fails, not hangs
    ) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests have arrived; returns them all."""
        assert self._arrived is not None, "the server is not running"
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # one connection: requests one after another (keep-alive)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = next(self._conn_ids)
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                if not await self._answer(conn, method, path, headers, body, reader, writer):
                    return
        except (
            _BadRequest,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            return
        finally:
            self.open_connections -= 1
            transport = writer.transport
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(
        self,
        conn: int,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; returns whether the connection may serve another one."""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        record = RecordedRequest(
            index=len(self.requests),
            method=method,
            path=path.split("?", 1)[0],
            headers=headers,
            body=body,
            received=time.monotonic(),
            connection=conn,
        )
        self.requests.append(record)
        if self.on_request is not None:
            self.on_request(record)
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        keep_alive = headers.get("connection", "").lower() != "close"
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            reply = self._choose(record, bad_json)
            if self.gather:
                with contextlib.suppress(TimeoutError):  # then answer anyway: the test sees why
                    await self.wait_for_requests(self.gather, timeout=self.latency or 60.0)
                wait = reply.delay
            else:
                wait = self.latency + reply.delay
            if wait > 0:
                await asyncio.sleep(wait)
            if reply.status != 200:
                await _send_json(writer, reply.status, _error_body(reply, record), record, reply)
                return keep_alive
            msg = _message_json(reply, record)
            if record.stream:
                return await _send_stream(reader, writer, msg, reply, record) and keep_alive
            failure = next(
                (
                    n
                    for n in (reply.error_after, reply.stall_after, reply.drop_after)
                    if n is not None
                ),
                None,
            )
            if failure is None:
                await _send_json(writer, 200, msg, record, reply)
                return keep_alive
            if reply.error_after is not None:
                status = ERROR_STATUS.get(reply.error_type, 500)
                await _send_json(writer, status, _error_body(reply, record), record, reply)
                return keep_alive
            await _send_truncated_json(reader, writer, msg, reply, record)
            return False
        finally:
            self.in_flight -= 1

    def _choose(self, record: RecordedRequest, bad_json: bool) -> Reply:
        """Route and validate like the real API; only valid messages requests use the script."""
        if record.method != "POST" or record.path not in (
            "/v1/messages",
            "/v1/messages/count_tokens",
        ):
            return status_error(404, "not_found_error", f"Not found: {record.method} {record.path}")
        if self.validate or self.api_key is not None:
            problem = self._auth_problem(record.headers)
            if problem:
                return authentication_error(problem)
        if bad_json or not isinstance(record.body, dict):
            return invalid_request("request body must be a JSON object")
        if self.validate:
            problem = _validation_problem(record.headers, record.body, record.path)
            if problem:
                return invalid_request(problem)
        if record.path == "/v1/messages/count_tokens":
            return Reply(content=(), usage={"input_tokens": _estimate_input(record.body)})
        return self._next_reply(record.body, record.index)

    def _auth_problem(self, headers: Mapping[str, str]) -> str:
        given = _api_key(headers)
        if given is None:
            return "x-api-key header is required"
        if self.api_key is not None and given != self.api_key:
            return "invalid x-api-key"
        return ""


def _api_key(headers: Mapping[str, str]) -> str | None:
    return (
        headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ") or None
    )


# --- HTTP/1.1 on the wire -----------------------------------------------------------------------


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request (method, path, lower-case headers, decoded body); ``None`` at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError as e:
        raise _BadRequest(lines[0]) from e
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(line)
        headers[name.strip().lower()] = value.strip()
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers are ever sent
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
    except (ValueError, OSError, zlib.error) as e:  # bad sizes, bad gzip
        raise _BadRequest(str(e)) from e
    return method, target, headers, body


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _base_headers(record: RecordedRequest, reply: Reply) -> list[tuple[str, str]]:
    headers = [
        ("date", formatdate(usegmt=True)),
        ("request-id", f"req_fake{record.index:06d}"),
        ("anthropic-organization-id", "00000000-0000-0000-0000-00000000fake"),
        ("server", "fakeapi"),
    ]
    return headers + list(reply.headers)


async def _send_json(
    writer: asyncio.StreamWriter, status: int, body: JSON, record: RecordedRequest, reply: Reply
) -> None:
    data = json.dumps(body).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(data))),
        *_base_headers(record, reply),
    ]
    writer.write(_head(status, headers) + data)
    await writer.drain()


async def _send_truncated_json(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    msg: JSON,
    reply: Reply,
    record: RecordedRequest,
) -> None:
    """Headers announcing the whole body, then half of it (drop) or none of it (stall)."""
    data = json.dumps(msg).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(data))),
        *_base_headers(record, reply),
    ]
    writer.write(_head(200, headers))
    if reply.drop_after is not None:
        writer.write(data[: len(data) // 2])
        await writer.drain()
        writer.transport.abort()
        return
    await writer.drain()
    await _wait_for_hangup(reader)


async def _send_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    msg: JSON,
    reply: Reply,
    record: RecordedRequest,
) -> bool:
    """Send the message as SSE in a chunked body; returns whether the body ended cleanly."""
    events = _stream_events(msg, reply.chunk)
    if reply.error_after is not None:
        events = events[: reply.error_after]
        error = {
            "type": "error",
            "error": {"type": reply.error_type, "message": reply.error_message},
        }
        events.append(("error", error))
    headers = [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("transfer-encoding", "chunked"),
        *_base_headers(record, reply),
    ]
    writer.write(_head(200, headers))
    await writer.drain()
    for n, (name, data) in enumerate(events):
        if n == reply.stall_after:
            await _wait_for_hangup(reader)
            return False
        if n == reply.drop_after:
            writer.transport.abort()
            return False
        if n and reply.trickle > 0:
            await asyncio.sleep(reply.trickle)
        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        await writer.drain()
    if reply.stall_after is not None and reply.stall_after >= len(events):
        await _wait_for_hangup(reader)
        return False
    if reply.drop_after is not None and reply.drop_after >= len(events):
        writer.transport.abort()
        return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _wait_for_hangup(reader: asyncio.StreamReader) -> None:
    """A stall: send nothing more until the client closes the connection (or the server stops)."""
    while await reader.read(65536):
        pass


# --- the JSON the API sends ---------------------------------------------------------------------


def _estimate_input(body: JSON) -> int:
    return max(1, len(json.dumps(body)) // 4)


def _usage(reply: Reply, record: RecordedRequest, output_tokens: int) -> JSON:
    usage: JSON = {
        "input_tokens": _estimate_input(record.body),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    usage.update(reply.usage)
    return usage


def _message_json(reply: Reply, record: RecordedRequest) -> JSON:
    if record.path == "/v1/messages/count_tokens":
        return {"input_tokens": reply.usage.get("input_tokens", 0)}
    content: list[JSON] = []
    for n, block in enumerate(reply.content):
        if block["type"] == "tool_use":
            block = {"id": f"toolu_fake{record.index:04d}{n:02d}", **block}
            block = {k: block[k] for k in ("type", "id", "name", "input")}
        content.append(block)
    out_tokens = max(1, len(json.dumps(content)) // 4)
    model = record.body.get("model", "claude-fake") if isinstance(record.body, dict) else "?"
    return {
        "id": f"msg_fake{record.index:06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(reply, record, out_tokens),
    }


def _error_body(reply: Reply, record: RecordedRequest) -> JSON:
    return {
        "type": "error",
        "error": {"type": reply.error_type, "message": reply.error_message},
        "request_id": f"req_fake{record.index:06d}",
    }


def _pieces(s: str, size: int) -> list[str]:
    size = max(1, size)
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def stream_events(reply: Reply, model: str = "claude-sonnet-4-6") -> list[tuple[str, JSON]]:
    """The SSE events (name, data) this server sends for ``reply`` to a streamed request
    (for the benchmark's instrument, which sends the same events from another program)."""
    body = {"model": model, "max_tokens": 256, "stream": True, "messages": []}
    record = RecordedRequest(0, "POST", "/v1/messages", {}, body, 0.0, 0)
    return _stream_events(_message_json(reply, record), reply.chunk)


def _stream_events(msg: JSON, chunk: int) -> list[tuple[str, JSON]]:
    """The SSE events of a message, in the order and shapes the real API sends them."""
    usage = dict(msg["usage"])
    start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    events: list[tuple[str, JSON]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    if not msg["content"]:
        events.append(("ping", {"type": "ping"}))
    for i, block in enumerate(msg["content"]):
        if block["type"] == "tool_use":
            first = {**block, "input": {}}
            deltas = ["", *_pieces(json.dumps(block["input"]), chunk)]
            delta_events = [{"type": "input_json_delta", "partial_json": p} for p in deltas]
        else:
            first = {**block, "text": ""}
            delta_events = [
                {"type": "text_delta", "text": p} for p in _pieces(block["text"], chunk)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": first},
            )
        )
        if i == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in delta_events:
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    final_usage = {
        k: usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
        if k in usage
    }
    top: JSON = {"stop_reason": msg["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": top, "usage": final_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _validation_problem(headers: Mapping[str, str], body: JSON, path: str) -> str:
    """The first reason the real API would answer 400, or ``""``."""
    if "anthropic-version" not in headers:
        return "anthropic-version: header is required"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: Field required"
    if path == "/v1/messages" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    pending: set[str] = set()
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{n}.role: Input should be 'user' or 'assistant'"
        blocks = m.get("content")
        blocks = blocks if isinstance(blocks, list) else []
        if pending:
            answered = {
                b.get("tool_use_id")
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_result"
            }
            if m["role"] != "user" or not pending <= answered:
                missing = ", ".join(sorted(pending - answered))
                return (
                    f"messages.{n}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {missing}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
            pending = set()
        if m["role"] == "assistant":
            pending = {
                str(b.get("id"))
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_use"
            }
    return ""


# --- pytest fixture, thread and process modes ---------------------------------------------------


async def _fake_api_fixture() -> AsyncIterator[FakeMessagesAPI]:
    async with FakeMessagesAPI() as api:
        yield api


try:  # the fixture exists when pytest does; the process mode does not need pytest
    import pytest_asyncio

    fake_api = pytest_asyncio.fixture(_fake_api_fixture, name="fake_api")
    """A running `FakeMessagesAPI` with an empty script; call ``fake_api.script([...])``."""

    async def _fake_client_fixture(fake_api: FakeMessagesAPI) -> AsyncIterator[Any]:
        import anthropic  # lazy: costly, and the process mode does not need it

        client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="test-key", max_retries=0)
        try:
            yield client
        finally:
            await client.close()

    fake_client = pytest_asyncio.fixture(_fake_client_fixture, name="fake_client")
    """An ``AsyncAnthropic`` aimed at ``fake_api`` (key ``test-key``, no retries), closed after."""
except ImportError:  # pragma: no cover
    pass


@contextlib.contextmanager
def serve_in_thread(script: Script = (), **options: Any) -> Iterator[FakeMessagesAPI]:
    """Run a `FakeMessagesAPI` on its own event loop in a background thread (for sync tests)."""
    api = FakeMessagesAPI(script, **options)
    ready = threading.Event()
    failure: list[BaseException] = []
    control: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        stop = asyncio.Event()
        control.append((asyncio.get_running_loop(), stop))
        async with api:
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as e:  # handed to the test's thread below
            failure.append(e)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="fakeapi", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    try:
        yield api
    finally:
        loop, stop = control[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        if failure:
            raise failure[0]


def reply_from_json(spec: Mapping[str, Any]) -> Reply:
    """A `Reply` from a JSON object, for script files. Keys:

    ``{"text": "..."}``; ``{"tool_use": {"name", "input", "id"?}, "text"?: "..."}``;
    ``{"content": [blocks], "stop_reason": "..."}``;
    ``{"error": "rate_limit" | "overloaded" | "authentication" | "invalid_request" | "api_error",
    "message"?, "retry_after"?}``; ``{"status": 4xx/5xx, "error_type", "message"}``;
    ``{"mid_stream_error": "overloaded_error", "after": 4}``; and on any of them the modifiers
    ``delay``, ``trickle``, ``chunk``, ``stall_after``, ``drop_after``, ``headers``, ``usage``.
    """
    reply: Reply
    if "tool_use" in spec:
        t = spec["tool_use"]
        reply = tool_use(t["name"], t.get("input", {}), id=t.get("id"), text=spec.get("text"))
    elif "content" in spec:
        reply = message(*spec["content"], stop_reason=spec.get("stop_reason", "end_turn"))
    elif "error" in spec:
        kind = spec["error"]
        makers: dict[str, Callable[[], Reply]] = {
            "rate_limit": lambda: rate_limited(spec.get("retry_after", 1)),
            "overloaded": overloaded,
            "authentication": authentication_error,
            "invalid_request": invalid_request,
            "api_error": api_error,
        }
        reply = makers[kind]()
        if "message" in spec:
            reply = replace(reply, error_message=spec["message"])
    elif "status" in spec:
        reply = status_error(
            int(spec["status"]), spec.get("error_type", "api_error"), spec.get("message", "error")
        )
    elif "mid_stream_error" in spec:
        reply = mid_stream_error(spec.get("after", 4), error_type=spec["mid_stream_error"])
    else:
        reply = text(spec.get("text", "OK"), stop_reason=spec.get("stop_reason", "end_turn"))
    mods = {
        k: spec[k] for k in ("delay", "trickle", "chunk", "stall_after", "drop_after") if k in spec
    }
    reply = replace(reply, **mods)
    if "headers" in spec:
        reply = replace(reply, headers=reply.headers + tuple(spec["headers"].items()))
    if "usage" in spec:
        reply = reply.with_usage(**spec["usage"])
    return reply


def load_script(path: Path) -> tuple[list[Reply], Reply | None, JSON]:
    """A script file: a list of replies, or ``{"replies": [...], "default": {...}, options}``."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        data = {"replies": data}
    replies = [reply_from_json(r) for r in data.get("replies", [])]
    default = reply_from_json(data["default"]) if "default" in data else None
    options = {k: data[k] for k in ("latency", "gather", "api_key", "validate") if k in data}
    return replies, default, options


def _write_port_file(path: str, port: int) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def _serve_forever(
    args: argparse.Namespace, write_log: Callable[[RecordedRequest], None]
) -> None:
    replies: list[Reply] = []
    default: Reply | None = None
    options: JSON = {}
    if args.script:
        replies, default, options = load_script(Path(args.script))
    if args.latency is not None:
        options["latency"] = args.latency
    if args.gather:
        options["gather"] = args.gather
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with FakeMessagesAPI(
        replies, default=default, port=args.port, on_request=write_log, **options
    ) as api:
        if args.port_file:
            await asyncio.to_thread(_write_port_file, args.port_file, api.port)
        print(f"listening {api.url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeapi", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here (atomically) once listening")
    parser.add_argument("--script", help="JSON script file (see reply_from_json)")
    parser.add_argument("--latency", type=float, default=None, help="seconds before each answer")
    parser.add_argument("--gather", type=int, default=0, help="answer once this many arrived")
    parser.add_argument("--log", help="append every request here as a JSON line (keys hashed)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(args.log, "a", encoding="utf-8")) if args.log else None

        def write_log(record: RecordedRequest) -> None:
            # One short line per request, flushed so a test can read it while we run.
            if log is not None:
                log.write(json.dumps(record.to_json()) + "\n")
                log.flush()

        asyncio.run(_serve_forever(args, write_log))


@dataclass
class FakeAPIProcess:
    """A fake API server running as a separate process (see `spawn_fake_api`)."""

    url: str
    port: int
    log: Path
    process: subprocess.Popen[str]

    def requests(self) -> list[JSON]:
        """Every request logged so far (secret headers hashed)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@contextlib.contextmanager
def spawn_fake_api(
    directory: Path,
    script: Sequence[Mapping[str, Any]] | Mapping[str, Any] = (),
    *,
    latency: float | None = None,
    gather: int = 0,
    timeout: float = 30.0,
) -> Iterator[FakeAPIProcess]:
    """Start ``python tests/fakeapi.py`` in its own process; stop it (SIGTERM) afterwards.

    ``script`` is JSON as `load_script` reads it; the script and the request log are written
    into ``directory``.
    """
    script_file = directory / "fakeapi-script.json"
    script_file.write_text(json.dumps(script if isinstance(script, Mapping) else list(script)))
    log = directory / "fakeapi-requests.jsonl"
    argv = [sys.executable, str(Path(__file__).resolve())]
    argv += ["--script", str(script_file), "--log", str(log)]
    if latency is not None:
        argv += ["--latency", str(latency)]
    if gather:
        argv += ["--gather", str(gather)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError("the fake API process did not start in time")
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"the fake API process failed to start: {line!r}")
        url = line.split()[1]
        yield FakeAPIProcess(url=url, port=int(url.rsplit(":", 1)[1]), log=log, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    main()
