"""The gateway on its own thread, between a client and the fake Messages API.

Requests are made with aiohttp, as a CLI agent's would arrive: a token as the key, the
Anthropic headers, a JSON body, streamed or not. What reached the upstream is read from the
fake's request log; what the agent was told arrives as events on this test's loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from conftest import FAST_GATEWAY
from fakeapi import (
    FakeMessagesAPI,
    authentication_error,
    overloaded,
    rate_limited,
    text,
)

from orchestrator.events import AgentEvent, Failed, Text, Usage
from orchestrator.gateway.grants import Grant
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.pricing import PriceTable
from orchestrator.gateway.service import Gateway, open_gateway
from orchestrator.gateway.shared import GatewaySettings, Upstream
from orchestrator.plan.model import Price

KEY = "sk-ant-real-key-for-the-gateway-only"
MODEL = "claude-sonnet-4-6"


@dataclass
class Hooks:
    """The scheduler's side: what the gateway posted to this test's loop, and a way to wait."""

    after_turn: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    events: dict[str, list[AgentEvent]] = field(default_factory=dict)
    posted: asyncio.Event = field(default_factory=asyncio.Event)

    def on_after_turn(self, agent_id: str) -> None:
        self.after_turn.append(agent_id)
        self._tell()

    def on_stopped(self, reason: str) -> None:
        self.stopped.append(reason)
        self._tell()

    def sink(self, agent_id: str) -> Callable[[AgentEvent], None]:
        received = self.events.setdefault(agent_id, [])

        def emit(event: AgentEvent) -> None:
            received.append(event)
            self._tell()

        return emit

    def _tell(self) -> None:
        self.posted.set()

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait for what the gateway posts (it comes from its thread, in the order posted)."""
        async with asyncio.timeout(timeout):
            while not check():
                self.posted.clear()
                await self.posted.wait()


@dataclass
class Setup:
    api: FakeMessagesAPI
    gateway: Gateway
    ledger: Ledger
    hooks: Hooks
    http: aiohttp.ClientSession

    @property
    def events(self) -> dict[str, list[AgentEvent]]:
        return self.hooks.events

    def grant(self, agent_id: str = "a1", *, seconds: float = 30.0, **kw: Any) -> Grant:
        emit = self.hooks.sink(agent_id)
        return self.gateway.open_grant(
            agent_id, deadline=time.monotonic() + seconds, emit=emit, **kw
        )

    async def post(
        self, grant: Grant | str | None, *, stream: bool = False, path: str = "/v1/messages",
        max_tokens: int = 100, model: str = MODEL,
    ) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        token = grant.token if isinstance(grant, Grant) else grant
        headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
        if token is not None:
            headers["x-api-key"] = token
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        if path == "/v1/messages":
            body |= {"max_tokens": max_tokens, "stream": stream}
        async with self.http.post(self.gateway.url + path, json=body, headers=headers) as r:
            return r.status, await r.read(), dict(r.headers)

    def usages(self, agent_id: str = "a1") -> list[Usage]:
        return [e for e in self.events.get(agent_id, []) if isinstance(e, Usage)]


async def open_setup(
    script: Any = (), *, budget: float | None = None, settings: GatewaySettings = FAST_GATEWAY,
    prices: PriceTable | None = None, ceiling: int = 8,
) -> AsyncIterator[Setup]:  # fmt: skip
    async with FakeMessagesAPI(script, api_key=KEY) as api:
        ledger, hooks = Ledger(budget), Hooks()
        async with (
            open_gateway(
                upstream=Upstream(api.url, ("x-api-key", KEY)), ledger=ledger,
                prices=prices or PriceTable(), hooks=hooks, settings=settings, ceiling=ceiling,
            ) as gateway,
            aiohttp.ClientSession() as http,
        ):  # fmt: skip
            yield Setup(api, gateway, ledger, hooks, http)


@pytest.fixture
async def gw() -> AsyncIterator[Setup]:
    async for setup in open_setup():
        yield setup


def error_of(body: bytes) -> tuple[str, str]:
    data = json.loads(body)
    assert data["type"] == "error"
    return data["error"]["type"], data["error"]["message"]


# --- passing requests through ---------------------------------------------------------------------


async def test_a_stream_passes_through_metered_with_the_real_key_upstream(gw: Setup) -> None:
    gw.api.script([text("Hello there, agent.").with_usage(input_tokens=1000, output_tokens=50)])
    grant = gw.grant()
    status, body, headers = await gw.post(grant, stream=True)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert body.count(b"event: content_block_delta") >= 2
    assert b"event: message_stop" in body
    [request] = gw.api.requests
    assert request.api_key == KEY  # the key is added by the gateway ...
    assert grant.token not in json.dumps(dict(request.headers))  # ... and the token stays here
    await gw.hooks.until(lambda: bool(gw.usages()))
    cost = (1000 * 3.0 + 50 * 15.0) / 1e6
    assert gw.events["a1"] == [Usage(1000, 50, pytest.approx(cost))]  # type: ignore[arg-type]
    assert gw.ledger.spent_usd == pytest.approx(cost)
    assert gw.ledger.reserved_usd == 0.0


async def test_a_large_stream_to_a_slow_reader_arrives_whole_and_metered(gw: Setup) -> None:
    """6 MiB streamed as fast as the upstream can, read by an agent that stops for a while
    after the first chunk: the gateway stops reading upstream while the agent is behind
    (its sink's high-water mark) and loses nothing."""
    big = "".join(chr(ord("a") + n % 26) for n in range(6 * 1024 * 1024))
    gw.api.script([text(big, output_tokens=5).with_trickle(0.0, chunk=256 * 1024)])
    grant = gw.grant()
    headers = {"x-api-key": grant.token, "anthropic-version": "2023-06-01"}
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": []}
    got = bytearray()
    async with gw.http.post(gw.gateway.url + "/v1/messages", json=body, headers=headers) as r:
        assert r.status == 200
        async for chunk in r.content.iter_chunked(64 * 1024):
            if not got:
                await asyncio.sleep(0.3)  # behind: the gateway's buffer fills meanwhile
            got += chunk
    deltas = [
        json.loads(line[6:])["delta"]["text"]
        for line in bytes(got).split(b"\n")
        if line.startswith(b"data: ") and b"text_delta" in line
    ]
    assert "".join(deltas) == big
    await gw.hooks.until(lambda: bool(gw.usages()))
    assert gw.usages()[0].tokens_out == 5


async def test_an_agent_that_hangs_up_mid_stream_is_not_retried_for(gw: Setup) -> None:
    gw.api.script([text("x" * 400).with_usage(input_tokens=100).with_trickle(0.02, chunk=8)])
    grant = gw.grant()
    headers = {"x-api-key": grant.token, "anthropic-version": "2023-06-01"}
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": []}
    async with gw.http.post(gw.gateway.url + "/v1/messages", json=body, headers=headers) as r:
        assert r.status == 200
        await r.content.readany()  # the first events, then the agent goes away
        r.close()
    await gw.hooks.until(lambda: bool(gw.usages()))  # settled: what it read is metered
    assert len(gw.api.requests) == 1  # asked once: a hang-up is not the upstream's failure
    assert not any(isinstance(e, Text) for e in gw.events["a1"])  # no "retrying" note


async def test_a_plain_request_and_count_tokens_pass_through(gw: Setup) -> None:
    gw.api.script([text("plain").with_usage(input_tokens=10, output_tokens=5)])
    grant = gw.grant()
    status, body, _ = await gw.post(grant)
    assert status == 200
    assert json.loads(body)["content"][0]["text"] == "plain"
    status, body, _ = await gw.post(grant, path="/v1/messages/count_tokens")
    assert status == 200
    assert "input_tokens" in json.loads(body)
    await gw.hooks.until(lambda: bool(gw.usages()))
    assert [e for e in gw.events["a1"] if isinstance(e, Usage)] == [
        Usage(10, 5, pytest.approx((10 * 3.0 + 5 * 15.0) / 1e6))  # type: ignore[arg-type]
    ]  # count_tokens costs nothing


async def test_the_connectivity_probe_answers_and_other_paths_are_not_found(gw: Setup) -> None:
    async with gw.http.head(gw.gateway.url + "/api/hello") as r:
        assert r.status == 200
    async with gw.http.get(gw.gateway.url + "/v1/models") as r:
        assert r.status == 404
        assert error_of(await r.read())[0] == "not_found_error"
    assert gw.api.requests == []


# --- tokens --------------------------------------------------------------------------------------


async def test_a_token_is_refused_once_its_attempt_ended_and_a_guess_always(gw: Setup) -> None:
    grant = gw.grant()
    assert (await gw.post(grant))[0] == 200
    await gw.gateway.close_grant(grant)
    for token in (grant, "orch-gw-guessed", None, KEY):
        status, body, headers = await gw.post(token)
        assert status == 401
        assert error_of(body)[0] == "authentication_error"
        assert headers["x-orchestrator-refusal"] == "token"
    assert len(gw.api.requests) == 1


async def test_closing_a_grant_cancels_its_request_in_flight_and_settles_it_first(
    gw: Setup,
) -> None:
    gw.api.script([text("never ends").with_usage(input_tokens=400).with_stall(after_events=2)])
    grant = gw.grant()
    request = asyncio.create_task(gw.post(grant, stream=True))
    await gw.api.wait_for_requests(1)
    while not grant.in_flight:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the message_start event has passed the gateway
    await gw.gateway.close_grant(grant)
    # Everything the gateway posted about the grant was delivered before the close returned.
    [usage] = gw.events["a1"]
    assert isinstance(usage, Usage)
    assert usage.tokens_in == 400
    assert gw.ledger.reserved_usd == 0.0
    with pytest.raises(aiohttp.ClientError):
        await request


# --- stopping -------------------------------------------------------------------------------------


async def test_a_cancelled_agent_and_a_fenced_run_are_refused_at_once(gw: Setup) -> None:
    a, b = gw.grant("a"), gw.grant("b")
    gw.gateway.refuse("a", "cancelled by request")
    status, body, headers = await gw.post(a)
    assert (status, headers["x-orchestrator-refusal"]) == (403, "cancelled")
    assert "cancelled by request" in error_of(body)[1]
    assert (await gw.post(b))[0] == 200
    gw.gateway.fence("cancel --all")
    status, body, _ = await gw.post(b)
    assert status == 403
    assert "the run is stopping (cancel --all)" in error_of(body)[1]
    assert len(gw.api.requests) == 1


async def test_after_turn_lets_the_answer_in_flight_finish_and_refuses_the_next(
    gw: Setup,
) -> None:
    gw.api.script([text("a slow but whole answer").with_trickle(0.02, chunk=2)])
    grant = gw.grant()
    first = asyncio.create_task(gw.post(grant, stream=True))
    await gw.api.wait_for_requests(1)
    assert gw.gateway.after_turn("a1")
    status, body, _ = await first
    assert status == 200
    assert b"event: message_stop" in body  # the turn in flight was not cut
    assert gw.hooks.after_turn == []
    status, _, headers = await gw.post(grant)
    assert (status, headers["x-orchestrator-refusal"]) == (403, "after_turn")
    await gw.hooks.until(lambda: bool(gw.hooks.after_turn))
    assert gw.hooks.after_turn == ["a1"]  # the scheduler is asked to stop it now
    assert not gw.gateway.after_turn("nobody")


async def test_an_auth_failure_stops_every_agents_traffic_and_is_reported_once(
    gw: Setup,
) -> None:
    gw.api.script(lambda body, index: authentication_error())
    a, b = gw.grant("a"), gw.grant("b")
    status, body, _ = await gw.post(a)
    assert status == 401  # upstream's answer, passed on
    assert error_of(body)[0] == "authentication_error"
    for grant in (b, a, b):
        status, body, headers = await gw.post(grant)
        assert (status, headers["x-orchestrator-refusal"]) == (403, "stopped")
        assert "model traffic is stopped: API 401 authentication_error" in error_of(body)[1]
    await gw.hooks.until(lambda: bool(gw.hooks.stopped) and bool(gw.events.get("b")))
    assert len(gw.api.requests) == 1
    assert len(gw.hooks.stopped) == 1
    assert next(e for e in gw.events["b"] if isinstance(e, Failed)).kind == "config"


# --- money ----------------------------------------------------------------------------------------


async def budget_setup(budget: float) -> AsyncIterator[Setup]:
    # Output at $10/Mtok, input free: a request's worst case is max_tokens * 1e-5.
    prices = PriceTable((("test-model", Price(0.0, 10.0)),))
    async for setup in open_setup(budget=budget, prices=prices):
        yield setup


async def test_a_request_whose_worst_case_does_not_fit_is_refused_and_never_sent() -> None:
    async for gw in budget_setup(0.015):
        gw.api.script(lambda body, index: text("ok").with_usage(output_tokens=1000))
        grant = gw.grant()
        assert (await gw.post(grant, max_tokens=1000, model="test-model"))[0] == 200
        status, body, headers = await gw.post(grant, max_tokens=1000, model="test-model")
        assert (status, headers["x-orchestrator-refusal"]) == (402, "budget")
        kind, message = error_of(body)
        assert kind == "billing_error"
        assert "budget: the request may cost up to $0.0100, $0.0050 of the run's $0.01" in message
        events = gw.events["a1"]

        def failed_yet(seen: list[AgentEvent] = events) -> bool:
            return any(isinstance(e, Failed) for e in seen)

        await gw.hooks.until(failed_yet)
        [failed] = [e for e in events if isinstance(e, Failed)]
        assert failed.kind == "budget"
        assert len(gw.api.requests) == 1
        assert gw.ledger.spent_usd == pytest.approx(0.01)


async def test_a_request_waits_for_reservations_that_may_make_room() -> None:
    async for gw in budget_setup(0.015):
        gw.api.script(lambda body, index: text("ok").with_usage(output_tokens=10).with_delay(0.3))
        a, b = gw.grant("a"), gw.grant("b")
        both = await asyncio.gather(
            gw.post(a, max_tokens=1000, model="test-model"),
            gw.post(b, max_tokens=1000, model="test-model"),
        )
        assert [status for status, _, _ in both] == [200, 200]  # b waited for a's real cost
        assert gw.ledger.spent_usd == pytest.approx(0.0002)


async def test_a_tasks_own_budget_binds_its_attempts_only() -> None:
    async for gw in budget_setup(1.0):
        gw.api.script(lambda body, index: text("ok").with_usage(output_tokens=1000))
        gw.ledger.open_account("task:t", 0.015)
        grant = gw.grant("t", account="task:t")
        other = gw.grant("u")
        assert (await gw.post(grant, max_tokens=1000, model="test-model"))[0] == 200
        status, body, _ = await gw.post(grant, max_tokens=1000, model="test-model")
        assert status == 402
        assert "of the task's $0.01 is left" in error_of(body)[1]
        assert (await gw.post(other, max_tokens=1000, model="test-model"))[0] == 200


# --- storms ---------------------------------------------------------------------------------------


async def test_a_storm_is_retried_past_any_count_while_the_deadline_allows(gw: Setup) -> None:
    storm = 12  # more tries than any fixed retry count the agents used to have (8)
    gw.api.script([*(rate_limited(0.01) if n % 2 else overloaded() for n in range(storm)),
                   text("through")])  # fmt: skip
    grant = gw.grant()
    status, body, _ = await gw.post(grant, stream=True)
    assert status == 200
    assert b"through" in body
    assert len(gw.api.requests) == storm + 1
    await gw.hooks.until(lambda: bool(gw.usages()))
    notes = [e for e in gw.events["a1"] if isinstance(e, Text)]
    assert len(notes) == storm
    assert notes[-1].text.startswith("[gateway: API 429 rate_limit_error")


async def test_retry_after_holds_every_agent_and_the_deadline_ends_the_wait() -> None:
    settings = replace(FAST_GATEWAY, retry=replace(FAST_GATEWAY.retry, retry_after_cap=5.0))
    async for gw in open_setup(settings=settings):
        gw.api.script([rate_limited(0.5), text("a"), text("b")])
        a, b = gw.grant("a"), gw.grant("b")
        first = asyncio.create_task(gw.post(a))
        await gw.api.wait_for_requests(1)
        await asyncio.sleep(0.05)
        assert (await gw.post(b))[0] == 200  # b was held by a's retry-after too
        assert (await first)[0] == 200
        first_at, *later = (r.received for r in gw.api.requests)
        assert all(t - first_at >= 0.45 for t in later)
        # A wait that would pass the attempt's deadline is not taken: upstream's answer is.
        gw.api.script([rate_limited(3)])
        status, _, _ = await gw.post(gw.grant("c", seconds=1.0))
        assert status == 429


async def test_many_agents_in_flight_share_one_limiter(gw: Setup) -> None:
    gw.api.script(lambda body, index: text("ok").with_delay(0.05))
    grants = [gw.grant(f"a{n}") for n in range(20)]
    answers = await asyncio.gather(*(gw.post(g, stream=True) for g in grants))
    assert {status for status, _, _ in answers} == {200}
    limiter = gw.gateway.shared.limiter
    assert limiter is not None
    assert limiter.peak_in_flight <= 8  # the ceiling this gateway was given
    assert gw.api.peak_in_flight <= 8
