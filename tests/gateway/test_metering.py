"""What the gateway reads off a request and off an answer: pure functions, no server."""

from __future__ import annotations

import json

import pytest

from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.metering import (
    BadRequest,
    RequestFacts,
    UsageScanner,
    input_estimate,
    message_usage,
    request_facts,
)
from orchestrator.gateway.pricing import TokenCount
from orchestrator.gateway.replies import classify, refusal, upstream_headers


def sse(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = b"".join(
    [
        sse("message_start", {"type": "message_start", "message": {"usage": {
            "input_tokens": 100, "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 300, "output_tokens": 1}}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "message_delta"}}),
        sse("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 7}}),
        sse("message_delta", {"type": "message_delta", "delta": {},
                              "usage": {"output_tokens": 42}}),
        sse("message_stop", {"type": "message_stop"}),
    ]
)  # fmt: skip


@pytest.mark.parametrize("size", [1, 3, 7, 64, len(STREAM)])
def test_the_scanner_reads_usage_whatever_the_chunking(size: int) -> None:
    scanner = UsageScanner()
    for i in range(0, len(STREAM), size):
        scanner.feed(STREAM[i : i + size])
    assert scanner.tokens == TokenCount(input=100, output=42, cache_write=20, cache_read=300)
    assert scanner.started
    assert scanner.error is None


def test_the_scanner_notes_an_error_event_and_keeps_what_it_saw() -> None:
    scanner = UsageScanner()
    scanner.feed(STREAM[: STREAM.index(b"event: content_block_delta")])
    scanner.feed(sse("error", {"type": "error", "error": {"type": "overloaded_error"}}))
    assert scanner.error == "overloaded_error"
    assert scanner.tokens.input == 100


def test_a_plain_answer_is_metered_from_its_usage() -> None:
    body = json.dumps({"type": "message", "usage": {"input_tokens": 5, "output_tokens": 6}})
    assert message_usage(body.encode()) == TokenCount(input=5, output=6)
    assert message_usage(b"not json") == TokenCount()


def test_request_facts_and_what_is_refused() -> None:
    raw = json.dumps({"model": "m", "max_tokens": 10, "stream": True, "messages": []}).encode()
    assert request_facts(raw) == RequestFacts("m", 10, True)
    assert input_estimate(raw) == len(raw) // 3 + 1
    counting = json.dumps({"model": "m", "messages": []}).encode()
    assert request_facts(counting, counting=True) == RequestFacts("m", 0, False)
    for bad in (b"[1]", b"{", b'{"max_tokens": 1}', b'{"model": "m"}', b'{"model": "m", '
                b'"max_tokens": true}'):  # fmt: skip
        with pytest.raises(BadRequest):
            request_facts(bad)


def test_the_client_credential_never_goes_upstream() -> None:
    headers = upstream_headers(
        [("x-api-key", "orch-gw-token"), ("Authorization", "Bearer orch-gw-token"),
         ("anthropic-version", "2023-06-01"), ("Host", "127.0.0.1"), ("Content-Length", "9")],
        ("x-api-key", "sk-real"),
    )  # fmt: skip
    assert headers == {"anthropic-version": "2023-06-01", "x-api-key": "sk-real"}


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "run_wide"),
    [
        (429, "rate_limit_error", "rate_limit", False),
        (529, "overloaded_error", "overload", False),
        (503, "api_error", "overload", False),
        (500, "api_error", "transient", False),
        (400, "invalid_request_error", "fatal", False),
        (401, "authentication_error", "fatal", True),
        (403, "permission_error", "fatal", True),
        (402, "billing_error", "fatal", True),
        (400, "billing_error", "fatal", True),
    ],
)
def test_upstream_errors_are_classified_for_retrying(
    status: int, error_type: str, kind: str, run_wide: bool
) -> None:
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": "x"}}).encode()
    failure = classify(status, {"retry-after": "2"}, body)
    assert (failure.kind, failure.run_wide) == (kind, run_wide)
    assert failure.retry_after == (None if kind == "fatal" else 2.0)  # never retried anyway
    assert failure.message == f"API {status} {error_type}: x"


def test_refusals_are_anthropic_shaped_and_say_they_are_the_gateways() -> None:
    answer = refusal("budget", "orchestrator gateway: budget: ...")
    assert answer.status == 402
    assert json.loads(answer.body) == {
        "type": "error",
        "error": {"type": "billing_error", "message": "orchestrator gateway: budget: ..."},
    }
    assert ("x-orchestrator-refusal", "budget") in answer.headers


def test_the_ledger_binds_the_run_and_each_account() -> None:
    ledger = Ledger(1.0)
    ledger.open_account("task:a", 0.3)
    assert ledger.reserve(0.2, account="task:a")
    assert not ledger.reserve(0.2, account="task:a")  # the task's cap
    assert ledger.could_fit(0.2, account="task:a")  # once the first settles
    ledger.settle(0.2, 0.25, account="task:a")
    assert not ledger.could_fit(0.1, account="task:a")
    assert ledger.reserve(0.7)  # the run has 0.75 left
    assert not ledger.reserve(0.1)
    ledger.settle(0.7, 0.75)
    assert ledger.budget_spent
    assert ledger.spent_usd == pytest.approx(1.0)
    assert ledger.reserved_usd == 0.0
