"""The gateway's client to the upstream API: HTTP/1.1 on pooled keep-alive connections, the
answer parsed by httptools (llhttp, the parser uvicorn and Node use) and handed on as it
arrives.

With aiohttp's client, B11's added latency was 7.6 ms at the median (3.4 ms of CPU per
request). Here a request is one write of bytes, and each piece of a stream goes to the
caller's *sink* from inside ``data_received``: scanned for usage and written to the agent's
connection without a task switch (2.8 ms added, 1.8 ms of CPU).

A request takes an idle connection (kept `IDLE` seconds) or opens one, writes itself and
waits for the headers; the caller reads the body (`orchestrator.gateway.connection.Response`:
whole, piped or in pieces), then gives the connection back (`UpstreamClient.release`). What
goes wrong on the wire raises `UpstreamError` (a `ConnectionError`); that connection is
closed.
``https`` upstreams get TLS with the system's trust store (and SNI).
The answer's encoding is asked to be ``identity`` (the gateway must read usage off it); a
server that compresses anyway is decompressed (gzip and deflate).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from orchestrator.gateway.connection import Connection, Origin, Response, UpstreamError

RESOLVED = 300.0
"""Seconds a host's address is kept once looked up."""
IDLE = 10.0
"""Seconds an idle connection is kept for reuse."""
KEEP = 256
"""Idle connections kept per origin at most."""


class UpstreamClient:
    """Requests to upstream APIs on this loop, over a pool of keep-alive connections."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Origin, deque[Connection]] = {}
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

    async def _connection(self, origin: Origin) -> Connection:
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

    async def _open(self, origin: Origin) -> Connection:
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
                    lambda: Connection(origin), sock=sock, ssl=tls,
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
