"""The claude agents' HTTP to the gateway: an httpx transport on the gateway's own client.

The SDK's default transport (httpcore on anyio, h11 parsing) cost the scheduler's loop
about a third of a claude agent's CPU: at 500 agents at once, whose requests all share the
one interpreter lock with the gateway's thread, that CPU is what the last request waits
behind before it even leaves (B5). `orchestrator.gateway.upstream.UpstreamClient` does the
same work for the gateway with less: a request is one write of bytes, the answer is parsed
by httptools inside the read callback, and a connection comes back from its pool without a
walk over the others.

The SDK keeps everything above the transport: building requests, its streams and models,
its errors. What fails on the wire is raised as the httpx exception the default transport
raises for it, so `orchestrator.agents.claude.sdk.classify` reads it the same way: a
connection that fails before the answer as ``ConnectError``, one that breaks off as
``RemoteProtocolError``, silence as ``ReadTimeout``.

Imported only by `orchestrator.agents.claude.agent.make_client` (which runs on a thread):
``httpx2`` is the SDK's, and as heavy to import.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx2

from orchestrator.gateway.connection import Response, UpstreamError
from orchestrator.gateway.upstream import UpstreamClient

_OWN_HEADERS = frozenset(
    {"host", "content-length", "accept-encoding", "transfer-encoding", "connection"}
)
"""Request headers the client writes itself (one of each: two would be a bad request)."""
_DECODED = frozenset({"content-encoding", "content-length"})
"""Answer headers that describe what the client already undid (it inflates a body that
came compressed): httpx must not undo it a second time."""


class GatewayTransport(httpx2.AsyncBaseTransport):
    """Requests on this loop over a pool of keep-alive HTTP/1.1 connections."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        self.read_timeout = read_timeout
        self.client = UpstreamClient(
            connect_timeout=connect_timeout, read_timeout=read_timeout, tls=tls
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        read = timeouts.get("read") or self.read_timeout
        body = await request.aread()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _OWN_HEADERS}
        try:
            answer = await self.client.post(str(request.url), body, headers, head_wait=read)
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc), request=request) from exc
        except UpstreamError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        decoded = "content-encoding" in answer.headers
        items = [(k, v) for k, v in answer.items if not (decoded and k.lower() in _DECODED)]
        return httpx2.Response(
            answer.status,
            headers=items,
            stream=_Body(self.client, answer, read, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self.client.close()


class _Body(httpx2.AsyncByteStream):
    """An answer's body as it arrives; closing it gives the connection back (or closes it,
    when the body was not read to its end)."""

    def __init__(
        self, client: UpstreamClient, answer: Response, silence: float, request: httpx2.Request
    ) -> None:
        self._client = client
        self._answer = answer
        self._silence = silence
        self._request = request
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._answer.pieces(self._silence):
                yield piece
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc), request=self._request) from exc
        except UpstreamError as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=self._request) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.release(self._answer)
