"""The gateway's client to the upstream API: HTTP/1.1 on pooled keep-alive connections, the
answer parsed by httptools (llhttp, the parser uvicorn and Node use) and handed on as it
arrives.

With aiohttp's client, B11's added latency was 7.6 ms at the median (3.4 ms of CPU per
request). Here a request is one write of bytes, and each piece of a stream goes to the
caller's *sink* from inside ``data_received``: scanned for usage and written to the agent's
connection without a task switch (2.8 ms added, 1.8 ms of CPU).

A request takes an idle connection (kept `IDLE` seconds) or opens one, writes itself and
waits for the headers; the caller reads the body (`Response.read`) or pipes it
(`Response.pipe`), then gives the connection back (`UpstreamClient.release`). What goes wrong
on the wire raises `UpstreamError` (a `ConnectionError`); that connection is closed.
``https`` upstreams get TLS with the system's trust store (and SNI).
The answer's encoding is asked to be ``identity`` (the gateway must read usage off it); a
server that compresses anyway is decompressed (gzip and deflate).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

RESOLVED = 300.0
"""Seconds a host's address is kept once looked up."""
IDLE = 10.0
"""Seconds an idle connection is kept for reuse."""
KEEP = 256
"""Idle connections kept per origin at most."""
HIGH_WATER = 256 * 1024
"""Bytes waiting in a sink's output before the upstream is no longer read from."""

Origin = tuple[str, str, int]


class UpstreamError(ConnectionError):
    """The upstream could not be reached, broke off, or sent what is not HTTP."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the answer being read on it."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.idle_since = 0.0
        self.closed = False

    # --- the transport's callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.close()  # nothing was asked: a server talking out of turn
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, Exception) and not isinstance(cause, httptools.HttpParserError):
                response.fail(cause)  # the sink raised: pass it on as it is
            else:
                response.fail(UpstreamError(f"not an HTTP answer ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        response = self.response
        if response is not None and not response.complete:
            if response.status and response.until_close:
                response.finish()  # a body that ends where the connection does
            else:
                why = f": {exc}" if exc else ""
                response.fail(UpstreamError(f"the upstream closed the connection{why}"))

    # --- the parser's callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.items.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.headers_done(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.body(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.finish()

    # --- ours -------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        t = self.transport
        return not self.closed and t is not None and not t.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """One upstream answer: its status and headers, then its body."""

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self.status = 0
        self.items: list[tuple[str, str]] = []
        """The headers as they came (names as sent)."""
        self.headers: dict[str, str] = {}
        """The same, by lower-case name (the last of repeated ones)."""
        self.complete = False
        self.until_close = False
        self._head: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._pieces: list[bytes] = []
        self._sink: Callable[[bytes], None] | None = None
        self._end: Callable[[], None] | None = None
        self._more: asyncio.Future[None] | None = None
        """What `pieces` waits on for the next piece (or the end)."""
        self._inflate: zlib._Decompress | None = None
        self.last = time.monotonic()
        """When the upstream last sent something (the caller watches silence with it)."""

    # from the connection

    def headers_done(self, status: int) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in self.items}
        coding = self.headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._inflate = zlib.decompressobj()
        elif coding not in ("identity", ""):
            self.fail(UpstreamError(f"the upstream sent content-encoding {coding!r}"))
            self._conn.close()
            return
        framed = (
            "content-length" in self.headers
            or "chunked" in self.headers.get("transfer-encoding", "").lower()
        )
        self.until_close = not framed and status not in (204, 304) and status >= 200
        if not self._head.done():
            self._head.set_result(None)

    def body(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error as exc:
                raise UpstreamError(f"a compressed body that does not inflate: {exc}") from exc
            if not data:
                return
        if self._sink is not None:
            self._sink(data)
        else:
            self._pieces.append(data)
            self._wake()

    def finish(self) -> None:
        self.complete = True
        inflate, self._inflate = self._inflate, None
        if inflate is not None and (rest := inflate.flush()):
            self.body(rest)
        if self._end is not None:
            self._end()
        if not self._done.done():
            self._done.set_result(None)
        self._wake()

    def fail(self, exc: Exception) -> None:
        for future in (self._head, self._done):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved here: the waiter, if any, raises it
        self._wake()

    def _wake(self) -> None:
        more, self._more = self._more, None
        if more is not None and not more.done():
            more.set_result(None)

    # for the caller

    async def read(self, silence: float) -> bytes:
        """The whole body (``silence`` seconds with nothing between pieces: TimeoutError)."""
        await self._wait_done(silence)
        data = b"".join(self._pieces)
        self._pieces.clear()
        return data

    async def pieces(self, silence: float) -> AsyncIterator[bytes]:
        """The body as it arrives, what came since the last step joined into one piece
        (``silence`` seconds with nothing: TimeoutError, and the connection is closed)."""
        while True:
            if self._pieces:
                data = b"".join(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
                self._pieces.clear()
                yield data
                continue
            if self._done.done():
                self._done.result()  # the failure, if it failed
                return
            more = self._more = self._loop.create_future()
            try:
                async with asyncio.timeout(silence):
                    await more
            except TimeoutError:
                self.fail(TimeoutError(f"the upstream was silent for {silence:g} s"))
                self._conn.close()
                raise

    async def pipe(
        self, sink: Callable[[bytes], None], silence: float, end: Callable[[], None] | None = None
    ) -> None:
        """Hand each piece of the body to ``sink`` as it arrives (what came before, first),
        and call ``end`` once the body is complete; return then. Both run inside the loop's
        read callback (the agent has the last byte without waiting for a task switch), so
        they must not block."""
        pieces, self._pieces = self._pieces, []
        for piece in pieces:
            sink(piece)
        self._sink = sink
        self._end = end
        if self.complete and end is not None:
            end()
        await self._wait_done(silence)

    def pause(self) -> None:
        """Stop reading from the upstream (the reader is behind)."""
        if self._conn.transport is not None:
            self._conn.transport.pause_reading()

    def resume(self) -> None:
        if self._conn.transport is not None and not self._conn.closed:
            self._conn.transport.resume_reading()

    def release(self) -> _Connection | None:
        """Done with the answer: its connection, ready for the next request, if it can be
        reused (the answer was read to its end and the server keeps it open); else None,
        and the connection is closed."""
        conn = self._conn
        if conn.response is not self:
            return None
        conn.response = None
        keep = self.headers.get("connection", "").lower() != "close"
        if self.complete and not self.until_close and keep and conn.usable:
            assert conn.transport is not None
            conn.transport.resume_reading()
            conn.idle_since = time.monotonic()
            conn.parser = httptools.HttpResponseParser(conn)
            return conn
        conn.close()
        return None

    async def _wait_done(self, silence: float) -> None:
        """Until the body is complete; TimeoutError after ``silence`` seconds with nothing.
        One timer per answer, set again only when it fires (a piece just notes the time)."""
        loop = self._loop

        def check() -> None:
            left = self.last + silence - time.monotonic()
            if self._done.done():
                return
            if left > 0:
                timer[0] = loop.call_later(left, check)
                return
            self.fail(TimeoutError(f"the upstream was silent for {silence:g} s"))
            self._conn.close()

        timer = [loop.call_later(silence, check)]
        try:
            await self._done
        finally:
            timer[0].cancel()


class UpstreamClient:
    """Requests to upstream APIs on this loop, over a pool of keep-alive connections."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, int, tuple[object, ...]]] = {}
        self._opening: dict[Origin, int] = {}
        self._ahead: set[asyncio.Task[None]] = set()
        self._tls = tls
        """TLS settings for ``https`` (default: the system's trust store, made when needed)."""
        self.opened = 0
        """Connections opened so far (for tests: reuse is visible here)."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, head_wait: float | None = None
    ) -> Response:
        """Send ``body`` to ``url`` and wait for the answer's status and headers (at most
        ``head_wait`` seconds; the client's ``read_timeout`` when None)."""
        parts = urlsplit(url)
        origin = _origin(url)
        port = origin[2]
        assert parts.hostname is not None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
        if ":" in parts.hostname and parts.port is not None:
            host = f"[{parts.hostname}]:{port}"
        head = [f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"]
        head.append("Accept-Encoding: identity\r\n")
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never split a header into two
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1", "replace") + body
        conn = await self._connection(origin)
        loop = asyncio.get_running_loop()
        response = Response(conn, loop)
        conn.response = response
        assert conn.transport is not None
        conn.transport.write(data)
        wait = self.read_timeout if head_wait is None else head_wait
        why = f"no answer from the upstream in {wait:g} s"
        timer = loop.call_later(wait, response.fail, TimeoutError(why))
        try:
            await response._head
        except BaseException:
            conn.response = None
            conn.close()
            raise
        finally:
            timer.cancel()
        return response

    async def _connection(self, origin: Origin) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < IDLE and conn.response is None:
                return conn
            conn.close()
        return await self._open(origin)

    def open_ahead(self, url: str, want: int) -> None:
        """Open connections to ``url``'s server in the background until ``want`` of them
        (at most `KEEP`) are idle or being opened: an agent's first request then finds one
        ready instead of waiting for TCP and TLS handshakes behind other agents' requests."""
        origin = _origin(url)
        have = len(self._idle.get(origin, ())) + self._opening.get(origin, 0)
        loop = asyncio.get_running_loop()
        for _ in range(min(want, KEEP) - have):
            self._opening[origin] = self._opening.get(origin, 0) + 1
            task = loop.create_task(self._open_idle(origin))
            self._ahead.add(task)
            task.add_done_callback(self._ahead.discard)

    async def _open_idle(self, origin: Origin) -> None:
        try:
            conn = await self._open(origin)
        except (UpstreamError, TimeoutError):
            return  # the request that needs one will say why
        finally:
            self._opening[origin] -= 1
        conn.idle_since = time.monotonic()
        self._idle.setdefault(origin, deque()).append(conn)

    async def _open(self, origin: Origin) -> _Connection:
        scheme, hostname, port = origin
        tls = self._context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                family, address = await self._address(hostname, port)
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin), sock=sock, ssl=tls,
                    server_hostname=hostname if tls is not None else None,
                )  # fmt: skip
        except TimeoutError:
            _close(sock)
            raise UpstreamError(f"connecting to {hostname}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            _close(sock)
            self._addresses.pop((hostname, port), None)  # look it up again next time
            raise UpstreamError(f"cannot connect to {hostname}:{port}: {exc}") from exc
        except BaseException:
            _close(sock)
            raise
        self.opened += 1
        return conn

    async def _address(self, hostname: str, port: int) -> tuple[int, tuple[object, ...]]:
        """Where ``hostname`` is, looked up once per `RESOLVED` seconds (a lookup runs on a
        thread of the loop's pool: with 100 agents connecting at once they queued there for
        10 ms each)."""
        key = (hostname, port)
        known = self._addresses.get(key)
        now = time.monotonic()
        if known is not None and now - known[0] < RESOLVED:
            return known[1], known[2]
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
        if not found:
            raise UpstreamError(f"{hostname} has no address")
        family, _, _, _, address = found[0]
        self._addresses[key] = (now, family, address)
        return family, address

    def release(self, response: Response) -> None:
        """Done with ``response``: its connection is kept for the next request if it can be."""
        conn = response.release()
        if conn is None:
            return
        idle = self._idle.setdefault(conn.origin, deque())
        if len(idle) < KEEP:
            idle.append(conn)
        else:
            conn.close()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def close(self) -> None:
        for task in self._ahead:
            task.cancel()
        for idle in self._idle.values():
            while idle:
                idle.pop().close()


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def _origin(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"not an http(s) URL: {url}")
    return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80)
