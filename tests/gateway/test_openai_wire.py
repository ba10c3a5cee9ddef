"""OpenAI's wire formats, read by the gateway: pure functions, no server."""

from __future__ import annotations

import json

import pytest

from orchestrator.gateway.metering import BadRequest
from orchestrator.gateway.openai_wire import (
    OpenAIUsageScanner,
    UsageChunkFilter,
    prepare,
    tokens_of,
    usage_of,
)
from orchestrator.gateway.pricing import TokenCount

USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 7,
    "prompt_tokens_details": {"cached_tokens": 40},
}


def chat_stream(sep: bytes) -> list[bytes]:
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
    last = {"choices": [], "usage": USAGE}
    return [b"data: " + json.dumps(data).encode() + sep for data in (chunk, last)] + [
        b"data: [DONE]" + sep
    ]


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"], ids=["lf", "crlf"])
def test_the_usage_chunk_is_read_and_hidden_whatever_the_line_ends(sep: bytes) -> None:
    scanner, hide = OpenAIUsageScanner(), UsageChunkFilter()
    raw = b"".join(chat_stream(sep))
    out = b""
    for i in range(0, len(raw), 7):  # events split across reads
        piece = raw[i : i + 7]
        scanner.feed(piece)
        out += hide.feed(piece)
    out += hide.rest()
    assert scanner.tokens == TokenCount(input=60, output=7, cache_read=40)
    assert out == chat_stream(sep)[0] + chat_stream(sep)[2]


def test_a_request_without_a_cap_gets_one_and_a_stream_asks_for_its_usage() -> None:
    raw = json.dumps({"model": "gpt-5", "messages": [], "stream": True}).encode()
    prepared = prepare("chat", raw, default_output=1000)
    body = json.loads(prepared.raw)
    assert body["max_completion_tokens"] == 1000
    assert body["stream_options"] == {"include_usage": True}
    assert prepared.hide_usage
    assert prepared.facts.max_tokens == 1000
    own = json.dumps({"model": "gpt-5", "input": "x", "max_output_tokens": 50}).encode()
    kept = prepare("responses", own, default_output=1000)
    assert kept.raw == own  # nothing to add: forwarded byte for byte
    assert kept.facts.max_tokens == 50


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"input": "x"}', b'{"model": "m", "max_output_tokens": 0}']
)
def test_unusable_requests_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequest):
        prepare("responses", body, default_output=10)


def test_usage_of_both_apis() -> None:
    assert usage_of(json.dumps({"usage": USAGE}).encode()) == TokenCount(60, 7, cache_read=40)
    responses = {
        "input_tokens": 9,
        "output_tokens": 2,
        "input_tokens_details": {"cached_tokens": 0},
    }
    assert tokens_of(responses) == TokenCount(9, 2)
    assert usage_of(b"{}") == TokenCount()
    assert usage_of(b"garbage") == TokenCount()
