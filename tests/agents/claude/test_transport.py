"""The claude agents' HTTP transport: the SDK's requests on the gateway's own client.

Against the fake Messages API, through httpx and through the SDK: answers stream piece by
piece, connections are reused only when an answer was read to its end, and what fails on the
wire is raised as the httpx exception `classify` reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx2
import pytest
from fakeapi import FakeMessagesAPI, text

from orchestrator.agents.claude.agent import ClaudeSettings, make_client
from orchestrator.agents.claude.sdk import auth_headers, classify
from orchestrator.agents.claude.transport import GatewayTransport
from orchestrator.gateway.connection import Response
from orchestrator.gateway.grants import Access

MODEL = "claude-sonnet-4-6"
BODY = {"model": MODEL, "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def api() -> AsyncIterator[FakeMessagesAPI]:
    async with FakeMessagesAPI() as server:
        yield server


def transport(read_timeout: float = 5.0) -> GatewayTransport:
    return GatewayTransport(connect_timeout=5.0, read_timeout=read_timeout)


async def stream(client: httpx2.AsyncClient, url: str) -> list[bytes]:
    async with client.stream("POST", f"{url}/v1/messages", json=BODY, headers=HEADERS) as r:
        assert r.status_code == 200
        return [piece async for piece in r.aiter_bytes()]


async def test_a_streamed_answer_arrives_whole_and_its_connection_serves_the_next(
    api: FakeMessagesAPI,
) -> None:
    api.script([text("first " * 50), text("second")])
    way = transport()
    async with httpx2.AsyncClient(transport=way) as client:
        first = b"".join(await stream(client, api.url))
        second = b"".join(await stream(client, api.url))

    assert first.count(b"event: content_block_delta") > 1
    assert b"event: message_stop" in first
    assert b"event: message_stop" in second
    assert way.client.opened == 1
    # One of each header the client writes itself (httpx's copies are not sent too).
    sent = api.requests[0]
    assert sent.body == BODY
    assert sent.headers["x-api-key"] == "k"


async def test_an_answer_closed_before_its_end_closes_its_connection(
    api: FakeMessagesAPI,
) -> None:
    api.script([text("long " * 200).with_trickle(0.05, chunk=5), text("next")])
    way = transport()
    closed: list[bool] = []  # per answer given back: whether its connection was closed
    give_back = way.client.release

    def release(response: Response) -> None:
        give_back(response)
        closed.append(response._conn.closed)

    way.client.release = release  # type: ignore[method-assign]
    async with httpx2.AsyncClient(transport=way) as client:
        async with client.stream("POST", f"{api.url}/v1/messages", json=BODY, headers=HEADERS) as r:
            assert r.status_code == 200
            async for _ in r.aiter_bytes():
                break
        assert closed == [True]  # given back at once, and closed: not pooled half-read
        assert b"message_stop" in b"".join(await stream(client, api.url))

    assert closed == [True, False]
    assert way.client.opened == 2


async def test_a_request_cancelled_before_its_answer_closes_its_connection(
    api: FakeMessagesAPI,
) -> None:
    # An agent stopped while it waits (a cancel, its deadline) leaves no connection that a
    # later request could take with the old answer still to come on it.
    api.script([text("late").with_delay(30.0), text("next")])
    way = transport()
    async with httpx2.AsyncClient(transport=way) as client:
        async with asyncio.TaskGroup() as tg:
            waiting = tg.create_task(stream(client, api.url))
            await api.wait_for_requests(1)
            waiting.cancel()
        assert waiting.cancelled()
        assert b"message_stop" in b"".join(await stream(client, api.url))

    assert way.client.opened == 2


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (text("silent").with_stall(after_events=2), httpx2.ReadTimeout),
        (text("cut").with_drop(after_events=2), httpx2.RemoteProtocolError),
        (text("late").with_delay(2.0), httpx2.ReadTimeout),
    ],
)
async def test_what_fails_on_the_wire_is_raised_as_httpx_raises_it(
    api: FakeMessagesAPI, reply: object, error: type[Exception]
) -> None:
    api.script([reply])  # type: ignore[list-item]
    # The request's own timeout (the SDK sets one on each) is the one that counts.
    async with httpx2.AsyncClient(transport=transport(), timeout=0.5) as client:
        with pytest.raises(error) as caught:
            await stream(client, api.url)
    failure = classify(caught.value)
    assert failure is not None
    assert failure.kind == "transient"


async def test_nothing_listening_is_a_connect_error(unused_tcp_port: int) -> None:
    async with httpx2.AsyncClient(transport=transport()) as client:
        with pytest.raises(httpx2.ConnectError):
            await stream(client, f"http://127.0.0.1:{unused_tcp_port}")


async def test_the_sdk_streams_through_it_with_the_attempts_token_in_place_of_the_key(
    api: FakeMessagesAPI,
) -> None:
    api.script([text("Hello there.")])
    client = make_client(ClaudeSettings(), base_url=api.url)
    try:
        access = Access(api.url, "orch-attempt-token-1")
        async with client.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
            extra_headers=auth_headers(access),
        ) as s:  # fmt: skip
            message = await s.get_final_message()
    finally:
        await client.close()

    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there."
    sent = api.requests[0]
    assert sent.api_key == "orch-attempt-token-1"
    assert "orchestrator-gateway" not in json.dumps(dict(sent.headers))
