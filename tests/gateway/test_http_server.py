"""The gateway's HTTP server on its own: framing, keep-alive, limits, hang-ups, errors.

Clients here are raw sockets, so what the server writes is seen byte for byte; the gateway's
handlers on top of it are tested in test_gateway.py with aiohttp's client, and end to end by
the real Claude Code CLI, Anthropic's and OpenAI's SDKs in the agents' tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from orchestrator.gateway.server import Answer, Full, Request, Server

POST = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b"


class Echo:
    """Answers with what it got; ``/stream`` answers in three pieces; ``/wait`` waits."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.waiting = asyncio.Event()

    async def __call__(self, request: Request) -> Answer:
        if request.path == "/boom":
            raise RuntimeError("a handler's bug")
        if request.path == "/wait":
            self.waiting.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.path == "/stream":
            out = request.stream(200, [("content-type", "text/event-stream")])
            for piece in (b"one ", b"two ", b"three"):
                out.write(piece)
            return out
        body = json.dumps(
            {"method": request.method, "path": request.path_qs, "body": request.body.decode(),
             "key": request.headers.get("X-Api-Key"), "version": list(request.version)}
        ).encode()  # fmt: skip
        return Full(200, body, [("content-type", "application/json")])


@contextlib.asynccontextmanager
async def serving(handler: Echo, max_body: int = 1000) -> AsyncIterator[int]:
    server = Server(handler, max_body=max_body)
    port = await server.listen_tcp("127.0.0.1")
    try:
        yield port
    finally:
        await server.close()


async def answer_of(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One answer off the wire: status line, headers, body (by length, chunks or close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    else:
        body = await reader.read()
    return status.encode(), headers, body


async def test_requests_on_one_connection_are_answered_in_turn_even_pipelined() -> None:
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(POST % (5, b"first") + POST % (6, b"second"))  # both at once
        first, second = await answer_of(reader), await answer_of(reader)
        assert first[0] == b"HTTP/1.1 200 OK"
        assert json.loads(first[2])["body"] == "first"
        assert json.loads(second[2])["body"] == "second"
        assert first[1]["connection"] == "keep-alive"
        writer.close()


async def test_a_stream_is_chunked_for_http_1_1_and_ends_with_the_connection_for_1_0() -> None:
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        _, headers, body = await answer_of(reader)
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"one two three"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
        _, headers, body = await answer_of(reader)
        assert "transfer-encoding" not in headers
        assert headers["connection"] == "close"
        assert body == b"one two three"  # read to the end of the connection
        writer.close()


async def test_headers_are_found_in_any_case_and_the_query_is_kept() -> None:
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/x?beta=1 HTTP/1.1\r\nx-api-key: tok\r\ncontent-length: 0\r\n\r\n")
        got = json.loads((await answer_of(reader))[2])
        assert got == {"method": "POST", "path": "/v1/x?beta=1", "body": "", "key": "tok",
                       "version": [1, 1]}  # fmt: skip
        writer.close()


async def test_a_body_over_the_limit_is_refused_413_and_the_connection_closed() -> None:
    async with serving(Echo(), max_body=10) as port:
        for declared in (True, False):  # by content-length, and by chunks that add up
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if declared:
                writer.write(POST % (11, b"x" * 11))
            else:
                writer.write(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n")
                writer.write(b"8\r\nxxxxxxxx\r\n8\r\nxxxxxxxx\r\n0\r\n\r\n")
            status, _, body = await answer_of(reader)
            assert status == b"HTTP/1.1 413 Request Entity Too Large"
            assert "larger than 10 bytes" in json.loads(body)["error"]["message"]
            assert await reader.read() == b""  # closed
            writer.close()


async def test_a_head_without_end_is_refused_431_before_it_fills_memory() -> None:
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\n")
        with contextlib.suppress(ConnectionError):
            for n in range(100):  # 100 headers of 1 KiB: over the 64 KiB cap
                writer.write(b"x-h%d: %b\r\n" % (n, b"v" * 1024))
                await writer.drain()
        status, _, body = await answer_of(reader)
        assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert "larger than 65536 bytes" in json.loads(body)["error"]["message"]
        writer.close()


async def test_what_is_not_http_gets_400_and_expect_continue_gets_100() -> None:
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01 a TLS hello, say\r\n\r\n")
        assert (await answer_of(reader))[0].startswith(b"HTTP/1.1 400")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        assert json.loads((await answer_of(reader))[2])["body"] == "ok"
        writer.close()


async def test_a_client_that_hangs_up_cancels_its_handler() -> None:
    echo = Echo()
    async with serving(echo) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /wait HTTP/1.1\r\n\r\n")
        await echo.waiting.wait()
        writer.close()
        async with asyncio.timeout(10):
            await echo.cancelled.wait()


async def test_a_handler_that_raises_answers_500_and_the_server_goes_on() -> None:
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /boom HTTP/1.1\r\n\r\n")
        status, headers, body = await answer_of(reader)
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["message"] == "orchestrator gateway: internal error"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(POST % (2, b"ok"))
        assert (await answer_of(reader))[0] == b"HTTP/1.1 200 OK"
        writer.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("orchestrator.gateway.server.KEEP_ALIVE", 0.2)
    async with serving(Echo()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(POST % (2, b"ok"))
        await answer_of(reader)
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the server, idle
        writer.close()


async def test_close_cancels_what_runs_and_closes_idle_connections() -> None:
    echo = Echo()
    server = Server(echo, max_body=100)
    port = await server.listen_tcp("127.0.0.1")
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_writer.write(POST % (2, b"ok"))
    await answer_of(idle_reader)  # answered; the connection stays open, idle
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
    busy_writer.write(b"GET /wait HTTP/1.1\r\n\r\n")
    await echo.waiting.wait()
    async with asyncio.timeout(10):
        await server.close()
        assert echo.cancelled.is_set()
        assert await idle_reader.read() == b""
        assert await busy_reader.read() == b""
    idle_writer.close()
    busy_writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
