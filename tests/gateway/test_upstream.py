"""The gateway's upstream client on its own: keep-alive, framing, encodings, TLS, failures.

Against the fake Messages API where the real wire format matters, and against small servers
of a few lines where a server must misbehave (garbage, silence, a body cut short).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from fakeapi import FakeMessagesAPI, text

from orchestrator.gateway.connection import UpstreamError
from orchestrator.gateway.upstream import UpstreamClient

BODY = b'{"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": []}'
HEADERS = {"x-api-key": "k", "content-type": "application/json", "anthropic-version": "1"}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def client(**kw: object) -> UpstreamClient:
    return UpstreamClient(connect_timeout=5.0, read_timeout=5.0, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A server for the block, every connection of it closed at the end; yields its URL."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls is not None else "http"
    try:
        async with server:
            yield f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/messages"
    finally:
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answering(*answers: bytes, then_close: bool = False) -> Handler:
    """A server that reads one request per answer and sends it, in order."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        if then_close:
            writer.close()
        else:
            await reader.read()  # until the client hangs up

    return handle


@pytest.fixture
async def api() -> AsyncIterator[FakeMessagesAPI]:
    script = [text("Hello there, agent.", output_tokens=7).with_trickle(0.0, chunk=4)] * 3
    async with FakeMessagesAPI(script) as fake:
        yield fake


async def test_a_stream_is_piped_as_it_comes_and_the_connection_is_kept(
    api: FakeMessagesAPI,
) -> None:
    up = client()
    pieces: list[bytes] = []
    for _ in range(3):
        answer = await up.post(api.url + "/v1/messages", BODY[:-1] + b', "stream": true}', HEADERS)
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        await answer.pipe(pieces.append, 5.0)
        up.release(answer)
    streamed = b"".join(pieces)
    assert streamed.count(b"event: message_stop") == 3
    assert b"Hello there, agent." not in streamed  # it came in deltas of 4 characters
    assert len(pieces) > 3
    assert up.opened == 1
    assert {r.connection for r in api.requests} == {api.requests[0].connection}
    up.close()


async def test_a_plain_answer_is_read_whole_and_identity_is_asked_for(
    api: FakeMessagesAPI,
) -> None:
    up = client()
    answer = await up.post(api.url + "/v1/messages", BODY, HEADERS)
    data = await answer.read(5.0)
    up.release(answer)
    assert b'"Hello there, agent."' in data
    sent = api.requests[0].headers
    assert sent["accept-encoding"] == "identity"
    assert sent["x-api-key"] == "k"
    assert sent["host"].startswith("127.0.0.1:")
    up.close()


async def test_a_compressed_answer_is_inflated() -> None:
    body = gzip.compress(b'{"ok": true}' * 100)
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
    answer += b"content-length: %d\r\n\r\n%b" % (len(body), body)
    async with serving(answering(answer)) as url:
        up = client()
        got = await up.post(url, BODY, HEADERS)
        assert await got.read(5.0) == b'{"ok": true}' * 100
        up.release(got)
        up.close()


async def test_a_body_that_ends_with_the_connection_is_read_and_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nall of it"
    async with serving(answering(answer, then_close=True)) as url:
        up = client()
        for _ in range(2):
            got = await up.post(url, BODY, HEADERS)
            assert await got.read(5.0) == b"all of it"
            up.release(got)
        assert up.opened == 2
        up.close()


async def test_what_is_not_http_is_an_upstream_error() -> None:
    async with serving(answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as url:
        up = client()
        with pytest.raises(UpstreamError, match="not an HTTP answer"):
            await up.post(url, BODY, HEADERS)
        up.close()


async def test_a_body_cut_short_is_an_upstream_error() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    answer += b"transfer-encoding: chunked\r\n\r\n5\r\nevent\r\n"
    async with serving(answering(answer, then_close=True)) as url:
        up = client()
        got = await up.post(url, BODY, HEADERS)
        pieces: list[bytes] = []
        with pytest.raises(UpstreamError, match="closed the connection"):
            await got.pipe(pieces.append, 5.0)
        assert pieces == [b"event"]
        up.release(got)
        up.close()


async def test_a_silent_upstream_times_out_and_its_connection_is_dropped() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    answer += b"transfer-encoding: chunked\r\n\r\n5\r\nevent\r\n"
    async with serving(answering(answer)) as url:
        up = client()
        got = await up.post(url, BODY, HEADERS)
        with pytest.raises(TimeoutError, match="silent"):
            await got.pipe(lambda piece: None, 0.2)
        up.release(got)
        assert up.opened == 1
        assert not any(up._idle.values())  # dropped, not kept
        up.close()


async def test_no_answer_in_time_is_a_timeout() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with serving(mute) as url:
        up = UpstreamClient(connect_timeout=5.0, read_timeout=0.2)
        with pytest.raises(TimeoutError, match="no answer"):
            await up.post(url, BODY, HEADERS)
        up.close()


async def test_nobody_listening_is_an_upstream_error() -> None:
    async with serving(answering()) as url:
        pass
    with pytest.raises(UpstreamError, match="cannot connect"):
        await client().post(url, BODY, HEADERS)


async def test_a_header_cannot_smuggle_another(api: FakeMessagesAPI) -> None:
    up = client()
    evil = {**HEADERS, "x-note": "a\r\nx-api-key: stolen", "x-fine": "yes"}
    got = await up.post(api.url + "/v1/messages", BODY, evil)
    await got.read(5.0)
    up.release(got)
    sent = api.requests[0].headers
    assert sent["x-api-key"] == "k"
    assert "x-note" not in sent
    assert sent["x-fine"] == "yes"
    up.close()


async def test_tls_upstream_is_verified() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_tls)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with serving(answering(answer), tls=server_tls) as url:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        up = client(tls=trusting)
        got = await up.post(url, BODY, HEADERS)
        assert await got.read(5.0) == b"ok"
        up.release(got)
        up.close()
        with pytest.raises(UpstreamError, match="cannot connect"):
            await client().post(url, BODY, HEADERS)  # an unknown CA
