"""The gateway's HTTP/1.1 server: an asyncio protocol with httptools (llhttp) parsing requests.

aiohttp's server took 1.5 ms at the median to hand B11's requests to the gateway's handler
(its request objects, a task per connection and per request, its response writer); the rest
of the gateway's request path took 0.1 ms. This server parses a request in
``data_received``, runs its handler as one task, and writes what the handler answers in one
write; a stream's pieces are written by the handler straight to the connection
(`Stream.write`), framed as chunks.

One request per connection at a time: a client that pipelines has its later requests
answered in turn (reading pauses with `PIPELINED` of them waiting). Reading goes on while a
handler runs, so a client that hangs up is noticed. A request whose body is
larger than ``max_body`` is answered 413 and its connection closed; what is not HTTP, 400.
When the client hangs up, its handler is cancelled (as aiohttp's ``handler_cancellation``
did). Keep-alive follows HTTP/1.1 (``connection: close`` ends it; HTTP/1.0 keeps nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import httptools

log = logging.getLogger(__name__)

PIPELINED = 8
"""Requests read ahead on one connection while one is answered; then reading pauses."""
MAX_HEAD = 64 * 1024
"""Bytes of a request's target and headers at most (then 431 and the connection closed)."""
KEEP_ALIVE = 75.0
"""Seconds a connection may stay idle between requests before it is closed (aiohttp's)."""


class Headers:
    """A request's headers: ``get`` by any case of a name, ``items`` as they came."""

    __slots__ = ("_by_name", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._by_name = {name.lower(): value for name, value in items}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._by_name.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


class Full:
    """A complete answer: status, body, headers (``content-length`` is the server's)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)


class Stream:
    """An answer whose body is written as it comes (`Request.stream` starts it)."""

    __slots__ = ("chunked", "ended", "transport")

    def __init__(self, request: Request, status: int, headers: Iterable[tuple[str, str]]):
        self.transport = request.transport
        self.chunked = request.version >= (1, 1)
        self.ended = False
        framing = [("transfer-encoding", "chunked")] if self.chunked else []
        request.keep_alive = request.keep_alive and self.chunked
        self.transport.write(_head(status, [*headers, *framing], request.keep_alive))

    def write(self, piece: bytes) -> None:
        """Send ``piece`` now (ConnectionResetError once the client has gone)."""
        if not piece:
            return
        if self.transport.is_closing():
            raise ConnectionResetError("the client closed its connection")
        self.transport.write(b"%x\r\n%b\r\n" % (len(piece), piece) if self.chunked else piece)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            if self.chunked and not self.transport.is_closing():
                self.transport.write(b"0\r\n\r\n")


class Request:
    """One request, read whole."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "path_qs", "transport",
                 "version")  # fmt: skip

    def __init__(
        self, method: str, target: str, headers: Headers, body: bytes,
        version: tuple[int, int], keep_alive: bool, transport: asyncio.Transport,
    ) -> None:  # fmt: skip
        self.method = method
        self.path_qs = target
        self.path = target.split("?", 1)[0]
        self.headers = headers
        self.body = body
        self.version = version
        self.keep_alive = keep_alive
        self.transport = transport

    async def read(self) -> bytes:
        return self.body

    def stream(self, status: int, headers: Iterable[tuple[str, str]]) -> Stream:
        """Send the head of an answer whose body follows in pieces."""
        return Stream(self, status, headers)


Answer = Full | Stream
Handler = Callable[[Request], Awaitable[Answer]]


class _Connection(asyncio.Protocol):
    def __init__(
        self, handler: Handler, max_body: int, tasks: set[asyncio.Task[None]],
        open_: set[asyncio.Transport],
    ) -> None:  # fmt: skip
        self._handler = handler
        self._max_body = max_body
        self._tasks = tasks
        self._open = open_
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[Request] = deque()
        self._idle: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._items: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._open.add(self._transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._wait_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._open.discard(self._transport)
        self._transport = None
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client has gone: so has the reason to answer

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrades are not served")
        except httptools.HttpParserError as exc:
            if not self._refused:
                self._refuse(400, f"not an HTTP request ({exc})")

    # the parser's callbacks

    def on_message_begin(self) -> None:
        if not self._refused:
            self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        self._check_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._items.append((name.decode("latin-1"), value.decode("latin-1")))
        self._head_size += len(name) + len(value)
        self._check_head()

    def _check_head(self) -> None:
        if self._head_size > MAX_HEAD and not self._refused:
            self._refuse(431, f"the request's head is larger than {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        for name, value in self._items:
            low = name.lower()
            if low == "content-length" and value.strip().isdigit():
                if int(value) > self._max_body:
                    self._refuse(413, f"the body is larger than {self._max_body} bytes")
                    return
            elif low == "expect" and value.strip().lower() == "100-continue":
                assert self._transport is not None
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._size += len(body)
        if self._size > self._max_body:
            self._refuse(413, f"the body is larger than {self._max_body} bytes")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if self._refused or transport is None:
            return
        parser = self._parser
        major, minor = (int(n) for n in parser.get_http_version().split("."))
        request = Request(
            parser.get_method().decode("ascii", "replace"), self._url.decode("latin-1"),
            Headers(self._items), b"".join(self._body), (major, minor),
            parser.should_keep_alive(), transport,
        )  # fmt: skip
        if self._task is not None:  # pipelined: answered in turn
            self._pending.append(request)
            if len(self._pending) >= PIPELINED:
                transport.pause_reading()
            return
        self._start(request)

    def _start(self, request: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(request))
        self._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ours

    async def _answer(self, request: Request) -> None:
        transport = request.transport
        try:
            answer = await self._handler(request)
        except asyncio.CancelledError:
            transport.close()
            raise
        except Exception:
            log.exception("gateway: error handling %s %s", request.method, request.path)
            body = json.dumps({"type": "error", "error": {"type": "api_error",
                               "message": "orchestrator gateway: internal error"}})  # fmt: skip
            answer = Full(500, body.encode(), [("content-type", "application/json")])
            request.keep_alive = False
        if isinstance(answer, Full):
            if not transport.is_closing():
                head = _head(answer.status, answer.headers, request.keep_alive, len(answer.body))
                transport.write(head + (b"" if request.method == "HEAD" else answer.body))
        else:
            answer.end()
        self._task = None
        if not request.keep_alive or transport.is_closing():
            self._pending.clear()
            transport.close()
        elif self._pending:
            self._start(self._pending.popleft())
            if len(self._pending) < PIPELINED:
                transport.resume_reading()
        else:
            self._wait_idle()

    def _wait_idle(self) -> None:
        if self._transport is not None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(KEEP_ALIVE, self._transport.close)

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        if self._transport is None or self._transport.is_closing():
            return
        body = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                           "message": f"orchestrator gateway: {message}"}}).encode()  # fmt: skip
        headers = [("content-type", "application/json")]
        self._transport.write(_head(status, headers, False, len(body)) + body)
        self._transport.close()


def _head(
    status: int, headers: Iterable[tuple[str, str]], keep_alive: bool, length: int | None = None
) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            continue
        lines.append(f"{name}: {value}\r\n")
    if length is not None:
        lines.append(f"content-length: {length}\r\n")
    lines.append("connection: keep-alive\r\n\r\n" if keep_alive else "connection: close\r\n\r\n")
    return "".join(lines).encode("latin-1", "replace")


class Server:
    """The listening sockets of one handler, and the requests it is answering."""

    def __init__(self, handler: Handler, *, max_body: int) -> None:
        self._handler = handler
        self._max_body = max_body
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.Transport] = set()

    def _protocol(self) -> _Connection:
        return _Connection(self._handler, self._max_body, self._tasks, self._open)

    async def listen_tcp(self, host: str, port: int = 0) -> int:
        """Listen on ``host``:``port`` (0: any free one); the port."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._protocol, host, port, backlog=2048)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def listen_unix(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_unix_server(self._protocol, path, backlog=2048))

    async def close(self) -> None:
        """Stop listening, cancel what is being answered, and wait for it."""
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for transport in list(self._open):
            transport.close()  # idle keep-alive connections
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
