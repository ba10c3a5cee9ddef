"""One keep-alive HTTP/1.1 connection to an upstream and the answer being read on it.

`orchestrator.gateway.upstream.UpstreamClient` pools the connections. The answer is parsed
by httptools inside ``data_received`` and handed on as it arrives: to a *sink*
(`Response.pipe`: the gateway, which scans it for usage and writes it on without a task
switch), as pieces (`Response.pieces`: the claude agents' transport), or whole
(`Response.read`). What goes wrong on the wire fails the answer with `UpstreamError`, and
that connection is closed.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

HIGH_WATER = 256 * 1024
"""Bytes waiting in a sink's output before the upstream is no longer read from."""

Origin = tuple[str, str, int]


class UpstreamError(ConnectionError):
    """The upstream could not be reached, broke off, or sent what is not HTTP."""


class Connection(asyncio.Protocol):
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

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
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

    def release(self) -> Connection | None:
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
