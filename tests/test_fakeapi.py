"""The fake Messages API, proved with the real ``anthropic`` SDK (and, once, with a raw socket)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from fakeapi import (
    FakeMessagesAPI,
    api_error,
    authentication_error,
    invalid_request,
    message,
    mid_stream_error,
    overloaded,
    rate_limited,
    serve_in_thread,
    spawn_fake_api,
    status_error,
    text,
    text_block,
    tool_use,
    tool_use_block,
)

MODEL = "claude-sonnet-4-6"  # 4-5 makes this SDK warn (deprecated), an error here
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeMessagesAPI]:
    async with FakeMessagesAPI() as api:
        yield api


@pytest.fixture
async def fake_client(fake_api: FakeMessagesAPI) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake_api.url, api_key="test-key", max_retries=0
    ) as client:
        yield client


async def stream_text(client: anthropic.AsyncAnthropic, **kwargs: Any) -> list[str]:
    async with client.messages.stream(
        model=MODEL, max_tokens=256, messages=kwargs.pop("messages", HELLO), **kwargs
    ) as stream:
        return [piece async for piece in stream.text_stream]


async def test_streamed_text_arrives_as_several_deltas(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([text("The quick brown fox jumps over the lazy dog.").with_trickle(0, chunk=5)])

    async with fake_client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()

    assert len(pieces) == 9
    assert "".join(pieces) == "The quick brown fox jumps over the lazy dog."
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 1
    assert final.usage.cache_read_input_tokens == 0
    assert final.usage.cache_creation_input_tokens == 0
    [request] = fake_api.requests
    assert request.path == "/v1/messages"
    assert request.stream
    assert request.api_key == "test-key"  # SDK 2.x sends it as "authorization: Bearer ..."
    assert "anthropic-version" in request.headers
    assert request.body["messages"] == HELLO


async def test_streamed_tool_use_gives_parsed_input_in_final_message(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    args = {"path": "calc/ops.py", "content": "def add(a, b):\n    return a + b\n" * 5}
    fake_api.script([tool_use("write_file", args, id="toolu_01", text="Writing the file.")])

    seen: list[str] = []
    async with fake_client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                seen.append(event.delta.type)
        final = await stream.get_final_message()

    assert seen.count("input_json_delta") > 3
    assert "text_delta" in seen
    assert final.stop_reason == "tool_use"
    text_part, call = final.content
    assert text_part.type == "text"
    assert text_part.text == "Writing the file."
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == ("toolu_01", "write_file", args)


async def test_tool_use_ids_are_made_up_when_not_given(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script(
        [message(tool_use_block("a", {}), tool_use_block("b", {"x": 1}), stop_reason="tool_use")]
    )
    reply = await fake_client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    ids = [block.id for block in reply.content if block.type == "tool_use"]
    assert len(set(ids)) == 2
    assert all(i.startswith("toolu_") for i in ids)


async def test_plain_create_returns_a_json_message(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([message(text_block("one"), text_block("two"), input_tokens=42)])

    reply = await fake_client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert [b.text for b in reply.content if b.type == "text"] == ["one", "two"]
    assert reply.usage.input_tokens == 42
    assert reply.id.startswith("msg_")
    assert not fake_api.requests[0].stream


async def test_count_tokens_answers_with_an_estimate(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    counted = await fake_client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert counted.input_tokens > 0
    assert fake_api.requests[0].path == "/v1/messages/count_tokens"


async def test_a_malformed_request_closes_its_connection_not_the_server(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fake_api.port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\ncontent-length: lots\r\n\r\n")
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    assert await stream_text(fake_client) == ["OK"]


async def test_the_default_reply_is_used_when_the_script_runs_out(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([text("first")])
    assert await stream_text(fake_client) == ["first"]
    assert await stream_text(fake_client) == ["OK"]
    final = await fake_client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert final.stop_reason == "end_turn"


async def test_a_callable_script_sees_the_request_and_its_index(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    calls: list[tuple[str, int]] = []

    def respond(body: dict[str, Any], index: int) -> Any:
        calls.append((body["messages"][-1]["content"], index))
        return text(f"reply {index}") if index < 1 else None

    fake_api.script(respond)
    first = await stream_text(fake_client, messages=[{"role": "user", "content": "a"}])
    second = await stream_text(fake_client, messages=[{"role": "user", "content": "b"}])

    assert (first, second) == (["reply 0"], ["OK"])
    assert calls == [("a", 0), ("b", 1)]


async def test_429_raises_rate_limit_error_with_a_readable_retry_after(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([rate_limited(retry_after=7)])

    with pytest.raises(anthropic.RateLimitError) as caught:
        await stream_text(fake_client)

    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.type == "rate_limit_error"
    assert error.request_id == "req_fake000000"
    assert error.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": error.api_message},
        "request_id": "req_fake000000",
    }


async def test_529_raises_the_sdks_overloaded_error(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([overloaded()])

    with pytest.raises(anthropic.OverloadedError) as caught:
        await stream_text(fake_client)

    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"


@pytest.mark.parametrize(
    ("reply", "error_class", "error_type"),
    [
        (authentication_error(), anthropic.AuthenticationError, "authentication_error"),
        (
            invalid_request("max_tokens: too big"),
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
        (api_error(), anthropic.InternalServerError, "api_error"),
        (
            status_error(403, "permission_error", "no"),
            anthropic.PermissionDeniedError,
            "permission_error",
        ),
    ],
)
async def test_status_errors_map_to_the_sdks_classes(
    fake_api: FakeMessagesAPI,
    fake_client: anthropic.AsyncAnthropic,
    reply: Any,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    fake_api.script([reply, reply])

    with pytest.raises(error_class) as streamed:
        await stream_text(fake_client)
    with pytest.raises(error_class) as created:
        await fake_client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)

    assert streamed.value.type == created.value.type == error_type


async def test_a_wrong_key_is_refused_with_401() -> None:
    async with FakeMessagesAPI(api_key="the-right-key") as api:
        client = anthropic.AsyncAnthropic(base_url=api.url, api_key="wrong", max_retries=0)
        try:
            with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
                await stream_text(client)
        finally:
            await client.close()


async def test_an_error_event_mid_stream_raises_after_the_text_before_it(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([mid_stream_error(after_events=4, partial_text="Let me")])

    got: list[str] = []

    async def consume() -> None:
        async with fake_client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as s:
            async for piece in s.text_stream:
                got.append(piece)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await consume()

    assert got == ["Let me"]
    # The HTTP status was 200, so the SDK raises the base class, not OverloadedError.
    assert type(caught.value) is anthropic.APIStatusError
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error"


async def test_a_mid_stream_error_reply_is_an_http_error_for_a_plain_request(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([mid_stream_error()])
    with pytest.raises(anthropic.OverloadedError):
        await fake_client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)


async def test_a_stall_after_headers_raises_httpx_read_timeout_from_the_stream(
    fake_api: FakeMessagesAPI,
) -> None:
    fake_api.script([text("never finished").with_stall(after_events=3)])
    client = anthropic.AsyncAnthropic(
        base_url=fake_api.url, api_key="k", max_retries=0, timeout=0.3
    )
    try:
        with pytest.raises(httpx2.ReadTimeout):
            await stream_text(client)
    finally:
        await client.close()


async def test_a_delay_before_headers_raises_api_timeout_error(fake_api: FakeMessagesAPI) -> None:
    fake_api.script([text("late").with_delay(5)])
    client = anthropic.AsyncAnthropic(
        base_url=fake_api.url, api_key="k", max_retries=0, timeout=0.3
    )
    try:
        with pytest.raises(anthropic.APITimeoutError):
            await stream_text(client)
    finally:
        await client.close()


async def test_a_dropped_connection_mid_stream_raises_remote_protocol_error(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    fake_api.script([text("cut short").with_drop(after_events=3)])
    with pytest.raises(httpx2.RemoteProtocolError):
        await stream_text(fake_client)


async def test_sdk_retries_honour_retry_after_and_are_logged(fake_api: FakeMessagesAPI) -> None:
    fake_api.script([rate_limited(retry_after=0.2), overloaded(), text("at last")])
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=2)
    try:
        assert await stream_text(client) == ["at last"]
    finally:
        await client.close()

    first, second, third = fake_api.requests
    assert [r.headers["x-stainless-retry-count"] for r in (first, second, third)] == ["0", "1", "2"]
    assert second.received - first.received >= 0.19


async def test_an_unanswered_tool_use_is_rejected_like_the_real_api(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    history: list[Any] = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_9", "name": "x", "input": {}}],
        },
        {"role": "user", "content": [{"type": "text", "text": "forgot the result"}]},
    ]
    fake_api.script([text("never used")])

    with pytest.raises(anthropic.BadRequestError, match="toolu_9"):
        await fake_client.messages.create(model=MODEL, max_tokens=8, messages=history)

    history[2]["content"] = [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "ok"}]
    reply = await fake_client.messages.create(model=MODEL, max_tokens=8, messages=history)
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "never used"


async def test_sequential_requests_reuse_one_keep_alive_connection(
    fake_api: FakeMessagesAPI, fake_client: anthropic.AsyncAnthropic
) -> None:
    for _ in range(3):
        await stream_text(fake_client)
        await fake_client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert len({r.connection for r in fake_api.requests}) == 1
    assert len(fake_api.requests) == 6


async def test_200_concurrent_streams_are_all_in_flight_at_once() -> None:
    async with FakeMessagesAPI(latency=1.0) as api:
        api.script(lambda body, index: text(f"answer {index}").with_trickle(0.01, chunk=3))
        client = anthropic.AsyncAnthropic(base_url=api.url, api_key="k", max_retries=0)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(stream_text(client)) for _ in range(200)]
        finally:
            await client.close()

    assert api.peak_in_flight == 200
    assert api.peak_connections == 200
    assert len(api.requests) == 200
    answers = sorted("".join(t.result()) for t in tasks)
    assert answers == sorted(f"answer {i}" for i in range(200))


async def test_wait_for_requests_synchronises_on_arrival(fake_api: FakeMessagesAPI) -> None:
    fake_api.script([text("slow").with_stall()])
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=0)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(stream_text(client))
            [request] = await fake_api.wait_for_requests(1)
            assert request.stream
            assert fake_api.in_flight == 1
            task.cancel()
    finally:
        await client.close()


async def test_the_wire_format_is_chunked_sse_with_ping(fake_api: FakeMessagesAPI) -> None:
    fake_api.script([text("Hi!")])
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": HELLO, "stream": True})
    reader, writer = await asyncio.open_connection("127.0.0.1", fake_api.port)
    try:
        writer.write(
            (
                "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\n"
                "anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
            ).encode()
        )
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()

    head, _, chunked = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "content-type: text/event-stream; charset=utf-8" in lines
    assert "transfer-encoding: chunked" in lines
    assert any(line.startswith("request-id: req_") for line in lines)
    payload = b""
    while chunked:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        payload += rest[:size]
        chunked = rest[size + 2 :]
    events = [block.split("\n") for block in payload.decode().strip().split("\n\n")]
    names = [e[0].removeprefix("event: ") for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(e[1].removeprefix("data: ")) for e in events]
    assert [d["type"] for d in datas] == names
    assert datas[0]["message"]["usage"]["output_tokens"] == 1
    assert datas[0]["message"]["content"] == []
    assert datas[5]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert set(datas[5]["usage"]) >= {"output_tokens", "input_tokens"}


def test_the_thread_mode_serves_a_synchronous_client() -> None:
    with serve_in_thread([text("from a thread")]) as api:
        with anthropic.Anthropic(base_url=api.url, api_key="k", max_retries=0) as client:
            reply = client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        assert len(api.requests) == 1
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "from a thread"


def test_the_process_mode_logs_requests_without_the_key(tmp_path: Path) -> None:
    script = {"replies": [{"text": "from a process"}, {"error": "rate_limit", "retry_after": 3}]}
    with spawn_fake_api(tmp_path, script) as proc:
        with anthropic.Anthropic(base_url=proc.url, api_key="canary-key", max_retries=0) as client:
            with client.messages.stream(model=MODEL, max_tokens=8, messages=HELLO) as stream:
                assert stream.get_final_text() == "from a process"
            with pytest.raises(anthropic.RateLimitError) as caught:
                client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        assert caught.value.response.headers["retry-after"] == "3"
        logged = proc.requests()
    assert [r["body"].get("stream", False) for r in logged] == [True, False]
    assert "canary-key" not in (tmp_path / "fakeapi-requests.jsonl").read_text()
    assert logged[0]["headers"]["authorization"].startswith("sha256:")
