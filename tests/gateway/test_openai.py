"""OpenAI-style traffic (codex's Responses API, aider's Chat Completions) through the gateway.

The real ``openai`` SDK talks to the gateway with a per-attempt token as its key; the gateway
forwards to the fake OpenAI API (``tests/fakeopenai.py``) with the real key. Metering,
refusals, the budget and storms behave as for Anthropic traffic (``test_gateway.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
from conftest import FAST_GATEWAY
from fakeopenai import FakeOpenAI, answer, invalid_key, no_quota, too_many_requests
from gateway.test_gateway import Hooks

from orchestrator.events import AgentEvent, Failed, Text, Usage
from orchestrator.gateway.grants import Grant
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.pricing import PriceTable
from orchestrator.gateway.service import Gateway, open_gateway
from orchestrator.gateway.shared import GatewaySettings, Upstream

KEY = "sk-proj-real-openai-key-for-the-gateway-only"
MODEL = "gpt-5"
PRICE_IN, PRICE_OUT, PRICE_CACHED = 1.25, 10.0, 0.125


@dataclass
class Setup:
    api: FakeOpenAI
    gateway: Gateway
    ledger: Ledger
    hooks: Hooks

    def grant(self, agent_id: str = "a1", *, seconds: float = 30.0) -> Grant:
        deadline = time.monotonic() + seconds
        return self.gateway.open_grant(agent_id, deadline=deadline, emit=self.hooks.sink(agent_id))

    def client(self, grant: Grant | str) -> openai.AsyncOpenAI:
        token = grant.token if isinstance(grant, Grant) else grant
        return openai.AsyncOpenAI(base_url=self.gateway.url + "/v1", api_key=token, max_retries=2)

    def usages(self, agent_id: str = "a1") -> list[Usage]:
        return [e for e in self.hooks.events.get(agent_id, []) if isinstance(e, Usage)]


async def open_setup(
    *, budget: float | None = None, settings: GatewaySettings = FAST_GATEWAY
) -> AsyncIterator[Setup]:
    async with FakeOpenAI(api_key=KEY) as api:
        ledger, hooks = Ledger(budget), Hooks()
        async with open_gateway(
            upstream=None, openai=Upstream(api.url, ("authorization", f"Bearer {KEY}")),
            ledger=ledger, prices=PriceTable(), hooks=hooks, settings=settings, ceiling=8,
        ) as gateway:  # fmt: skip
            yield Setup(api, gateway, ledger, hooks)


@pytest.fixture
async def gw() -> AsyncIterator[Setup]:
    async for setup in open_setup():
        yield setup


def cost(input: int, output: int, cached: int = 0) -> float:
    return ((input - cached) * PRICE_IN + output * PRICE_OUT + cached * PRICE_CACHED) / 1e6


async def test_a_chat_stream_is_metered_and_the_client_sees_the_stream_it_asked_for(
    gw: Setup,
) -> None:
    gw.api.script([answer("Hello from the fake model.", input_tokens=1000, output_tokens=40,
                          cached_tokens=200)])  # fmt: skip
    grant = gw.grant()
    async with gw.client(grant) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake model."
    assert all(c.choices for c in chunks)  # the usage chunk it did not ask for was dropped
    [request] = gw.api.requests
    assert request.bearer == KEY  # the real key upstream, the token nowhere there
    assert grant.token not in json.dumps(request.headers)
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["max_completion_tokens"] == FAST_GATEWAY.default_output
    await gw.hooks.until(lambda: bool(gw.usages()))
    assert gw.usages() == [Usage(1000, 40, pytest.approx(cost(1000, 40, 200)))]  # type: ignore[arg-type]
    assert gw.ledger.spent_usd == pytest.approx(cost(1000, 40, 200))
    assert gw.ledger.reserved_usd == 0.0


async def test_a_chat_stream_that_asks_for_usage_gets_it_and_its_own_cap_is_kept(
    gw: Setup,
) -> None:
    gw.api.script([answer("ok", input_tokens=10, output_tokens=2)])
    async with gw.client(gw.grant()) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True}, max_tokens=50,
        )  # fmt: skip
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 10
    [request] = gw.api.requests
    assert request.body["max_tokens"] == 50
    assert "max_completion_tokens" not in request.body
    await gw.hooks.until(lambda: bool(gw.usages()))
    assert gw.usages()[0].cost_usd == pytest.approx(cost(10, 2))


async def test_responses_streamed_and_plain_are_metered(gw: Setup) -> None:
    gw.api.script([answer("streamed answer", input_tokens=500, output_tokens=30, cached_tokens=100),
                   answer("plain", input_tokens=7, output_tokens=1)])  # fmt: skip
    async with gw.client(gw.grant()) as client:
        stream = await client.responses.create(model=MODEL, input="hi", stream=True)
        events = [event async for event in stream]
        plain = await client.responses.create(model=MODEL, input="hi", max_output_tokens=64)
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "streamed answer"
    assert plain.output_text == "plain"
    first, second = gw.api.requests
    assert first.path == "/v1/responses"
    assert first.body["max_output_tokens"] == FAST_GATEWAY.default_output
    assert second.body["max_output_tokens"] == 64
    await gw.hooks.until(lambda: len(gw.usages()) == 2)
    assert gw.usages() == [
        Usage(500, 30, pytest.approx(cost(500, 30, 100))),  # type: ignore[arg-type]
        Usage(7, 1, pytest.approx(cost(7, 1))),  # type: ignore[arg-type]
    ]


async def test_a_chat_answer_without_streaming_is_metered(gw: Setup) -> None:
    gw.api.script([answer("whole", input_tokens=20, output_tokens=5)])
    async with gw.client(gw.grant()) as client:
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content == "whole"
    await gw.hooks.until(lambda: bool(gw.usages()))
    assert gw.usages()[0].tokens_in == 20


# --- refusals ---------------------------------------------------------------------------------


async def test_refusals_are_openai_shaped_and_the_sdk_does_not_retry_them(gw: Setup) -> None:
    grant = gw.grant()
    gw.gateway.refuse("a1", "cancelled by request")
    async with gw.client(grant) as client:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.responses.create(model=MODEL, input="hi")
    assert denied.value.code == "cancelled"
    assert "cancelled by request" in denied.value.message
    async with gw.client("orch-gw-guessed") as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=MODEL, messages=[])
    assert refused.value.code == "token"
    other = gw.grant("b")
    gw.gateway.fence("cancel --all")
    async with gw.client(other) as client:
        with pytest.raises(openai.PermissionDeniedError) as fenced:
            await client.chat.completions.create(model=MODEL, messages=[])
    assert "the run is stopping (cancel --all)" in fenced.value.message
    assert gw.api.requests == []


async def test_a_request_past_the_budget_is_refused_and_never_sent() -> None:
    async for gw in open_setup(budget=0.05):
        async with gw.client(gw.grant()) as client:
            with pytest.raises(openai.APIStatusError) as refused:
                # 32,768 output tokens at $10/Mtok do not fit in $0.05
                await client.responses.create(model=MODEL, input="hi")
            assert refused.value.status_code == 402
            assert refused.value.code == "budget"
            ok = await client.responses.create(model=MODEL, input="hi", max_output_tokens=1000)
        assert ok.status == "completed"
        assert len(gw.api.requests) == 1
        events = gw.hooks.events["a1"]

        def failed(seen: list[AgentEvent] = events) -> bool:
            return any(isinstance(e, Failed) and e.kind == "budget" for e in seen)

        await gw.hooks.until(failed)


async def test_without_an_openai_key_openai_paths_are_refused() -> None:
    async with open_gateway(
        upstream=Upstream("http://127.0.0.1:9", ("x-api-key", "k")), ledger=Ledger(None),
        prices=PriceTable(), hooks=Hooks(), settings=FAST_GATEWAY, ceiling=2,
    ) as gateway:  # fmt: skip
        grant = gateway.open_grant("a", deadline=time.monotonic() + 9, emit=lambda e: None)
        async with aiohttp.ClientSession() as http:
            body: dict[str, Any] = {"model": MODEL, "input": "hi"}
            headers = {"Authorization": f"Bearer {grant.token}"}
            async with http.post(gateway.url + "/v1/responses", json=body, headers=headers) as r:
                assert r.status == 400
                error = (await r.json())["error"]
    assert "the run holds no OpenAI key (OPENAI_API_KEY)" in error["message"]


# --- storms and stops -------------------------------------------------------------------------


async def test_a_429_storm_is_retried_by_the_gateway_not_lost(gw: Setup) -> None:
    storm = 10
    gw.api.script([*(too_many_requests(0.01) for _ in range(storm)), answer("through")])
    async with gw.client(gw.grant()) as client:
        reply = await client.responses.create(model=MODEL, input="hi", stream=False)
    assert reply.output_text == "through"
    assert len(gw.api.requests) == storm + 1  # all retried in the gateway, none by the SDK
    await gw.hooks.until(lambda: bool(gw.usages()))
    notes = [e for e in gw.hooks.events["a1"] if isinstance(e, Text)]
    assert len(notes) == storm


@pytest.mark.parametrize("failure", [invalid_key(), no_quota()], ids=["401", "quota"])
async def test_an_auth_or_quota_failure_stops_all_traffic_once(gw: Setup, failure: Any) -> None:
    gw.api.script(lambda path, body, index: failure)
    a, b = gw.grant("a"), gw.grant("b")
    async with gw.client(a) as client_a, gw.client(b) as client_b:
        with pytest.raises(openai.APIStatusError) as first:
            await client_a.chat.completions.create(model=MODEL, messages=[])
        assert first.value.status_code == failure.status  # upstream's answer, passed on
        for client in (client_b, client_a):
            with pytest.raises(openai.PermissionDeniedError) as stopped:
                await client.responses.create(model=MODEL, input="hi")
            assert stopped.value.code == "stopped"
    await gw.hooks.until(lambda: bool(gw.hooks.stopped))
    assert len(gw.hooks.stopped) == 1
    assert len(gw.api.requests) == 1


async def test_after_turn_lets_the_stream_in_flight_finish(gw: Setup) -> None:
    gw.api.script([answer("a slow but whole answer").with_trickle(0.02, chunk=2)])
    grant = gw.grant()
    async with gw.client(grant) as client:

        async def turn() -> str:
            stream = await client.responses.create(model=MODEL, input="hi", stream=True)
            return "".join(
                [e.delta async for e in stream if e.type == "response.output_text.delta"]
            )

        first = asyncio.create_task(turn())
        await gw.api.wait_for_requests(1)
        assert gw.gateway.after_turn("a1")
        assert await first == "a slow but whole answer"
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.responses.create(model=MODEL, input="more")
    assert refused.value.code == "after_turn"
    await gw.hooks.until(lambda: gw.hooks.after_turn == ["a1"])


async def test_a_stream_cut_upstream_ends_with_an_error_event_and_settles(gw: Setup) -> None:
    gw.api.script([answer("x" * 80, input_tokens=5).with_drop(after_events=4)])
    async with gw.client(gw.grant()) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="broke off"):
            async for _ in stream:
                pass
    assert gw.ledger.reserved_usd == 0.0
    # No usage came: an estimate from above is charged, not nothing.
    await gw.hooks.until(lambda: bool(gw.usages()))
    [usage] = gw.usages()
    assert usage.tokens_out > 0
    assert usage.cost_usd > 0
