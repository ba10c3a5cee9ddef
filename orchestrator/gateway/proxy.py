"""One request through the gateway: admit, reserve, forward (retrying storms), meter, settle.

Runs on the gateway's own thread and event loop (`orchestrator.gateway.service` starts it),
called by its server (`orchestrator.gateway.server`). For each request of a model API (``POST
/v1/messages`` for Anthropic's; ``POST /v1/chat/completions`` and ``POST /v1/responses``
for OpenAI's: `orchestrator.gateway.dialects`):

1. **Admit**: the request's token must belong to an attempt still running, not cancelled,
   in a run whose model traffic is not stopped or fenced (`orchestrator.gateway.replies`
   lists the refusals). ``cancel --after-turn`` refuses the agent's next request and asks
   the scheduler to stop it.
2. **Reserve** its worst case with the run's ledger (`orchestrator.gateway.metering`).
   While reservations of requests in flight are what stands in the way, it waits for them
   to settle (their real cost is usually far below their bound); when the budget itself
   cannot pay, it refuses (402) and the attempt ends ``budget_exceeded``.
3. **Forward** to the upstream API with the real key, through the run's one
   `orchestrator.gateway.limiter.ApiLimiter` (AIMD concurrency, a request rate, the shared
   ``retry-after`` hold). 429 and 529 (and 503) are retried for as long as the attempt's
   deadline allows, so a storm slows agents down instead of losing their turns; other
   transient failures a few times; 401, 403 and billing errors stop the run's model traffic
   (the scheduler escalates once). A stream is passed through as its bytes arrive.
4. **Settle** with the usage the answer reported (a scanner reads it off the stream);
   the agent gets a `Usage` event, so its progress file, status and report show its spend.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

from orchestrator.events import Failed, Text, Usage
from orchestrator.gateway.connection import HIGH_WATER, Response, UpstreamError
from orchestrator.gateway.dialects import ANTHROPIC, CHAT, RESPONSES, Dialect, Scanner
from orchestrator.gateway.grants import Grant
from orchestrator.gateway.limiter import ApiFailure, ApiLimiter, Permit, backoff
from orchestrator.gateway.metering import (
    CHARS_PER_TOKEN,
    BadRequest,
    RequestFacts,
    input_estimate,
)
from orchestrator.gateway.openai_wire import Prepared, error_body, stream_error
from orchestrator.gateway.pricing import TokenCount
from orchestrator.gateway.replies import (
    Answer as Reply,
)
from orchestrator.gateway.replies import (
    RefusalKind,
    classify,
    client_headers,
    refusal,
    upstream_headers,
)
from orchestrator.gateway.server import Answer, Full, Request, Stream
from orchestrator.gateway.shared import Shared, Upstream
from orchestrator.gateway.upstream import UpstreamClient

LOW_WATER = HIGH_WATER // 4
_ROUTES: dict[str, tuple[Dialect, bool]] = {
    "/v1/messages": (ANTHROPIC, False),
    "/v1/messages/count_tokens": (ANTHROPIC, True),
    "/v1/chat/completions": (CHAT, False),
    "/v1/responses": (RESPONSES, False),
}


@dataclass(slots=True)
class _Exchange:
    """One admitted request and what it has used so far."""

    grant: Grant
    dialect: Dialect
    upstream: Upstream
    prepared: Prepared
    reserved: float
    metered: bool
    scanner: Scanner
    tokens: TokenCount | None = None
    answered: int | None = None
    """Bytes of the successful answer passed on so far (None: no success yet)."""

    @property
    def facts(self) -> RequestFacts:
        return self.prepared.facts


class Proxy:
    """The request handlers of one gateway."""

    def __init__(self, shared: Shared, client: UpstreamClient) -> None:
        self.shared = shared
        self.client = client
        s = shared.settings
        # Forwarding a request costs the gateway little: no pacing per turn of its loop.
        self.limiter = ApiLimiter(
            ceiling=shared.ceiling, rate=s.requests_per_second, per_turn=max(shared.ceiling, 16)
        )
        shared.limiter = self.limiter
        self._settled = asyncio.Event()

    async def handle(self, request: Request) -> Answer:
        """Answer one request (`orchestrator.gateway.server` calls it)."""
        route = _ROUTES.get(request.path) if request.method == "POST" else None
        if route is not None:
            dialect, counting = route
            return await self._serve(request, dialect, counting=counting)
        if request.path == "/api/hello":  # Claude Code's connectivity probe
            return Full(200)
        served = "/v1/messages, /v1/chat/completions and /v1/responses"
        message = f"Not found: {request.method} {request.path} (the gateway serves {served})"
        body = {"type": "error", "error": {"type": "not_found_error", "message": message}}
        return Full(404, json.dumps(body).encode(), [("content-type", "application/json")])

    # --- admit and reserve ------------------------------------------------------------------

    async def _serve(self, request: Request, dialect: Dialect, *, counting: bool) -> Answer:
        upstream = self.shared.openai if dialect.openai else self.shared.upstream
        grant, answer = self._admit(request, openai=dialect.openai)
        if answer is not None:
            return _local(answer)
        assert grant is not None
        if upstream is None:
            which = "OpenAI key (OPENAI_API_KEY)" if dialect.openai else "Anthropic key"
            why = f"orchestrator gateway: the run holds no {which}; {request.path} is not served"
            return _local(refusal("bad", why, openai=dialect.openai))
        me = asyncio.current_task()
        assert me is not None
        grant.in_flight.add(me)
        try:
            raw = await request.read()
            try:
                prepared = dialect.prepare(raw, counting, self.shared.settings.default_output)
            except BadRequest as exc:
                return _local(refusal("bad", f"orchestrator gateway: {exc}", openai=dialect.openai))
            facts = prepared.facts
            reserved = 0.0
            if not counting:
                reserved = self.shared.prices.upper_bound(
                    facts.model,
                    input_tokens=input_estimate(prepared.raw),
                    max_output=facts.max_tokens,
                )
                answer = await self._reserve(grant, reserved, openai=dialect.openai)
                if answer is not None:
                    return _local(answer)
            ex = _Exchange(
                grant, dialect, upstream, prepared, reserved, not counting, dialect.scanner()
            )
            try:
                return await self._forward(request, ex)
            finally:
                self._settle(ex)
        finally:
            grant.in_flight.discard(me)

    def _admit(self, request: Request, *, openai: bool) -> tuple[Grant | None, Reply | None]:
        shared = self.shared
        grant = shared.grant_of(request.headers)
        if grant is None or grant.closed:
            why = "not a token of this run, or its attempt has ended"
            return None, refusal("token", f"orchestrator gateway: {why}", openai=openai)
        refused = self._refusal(grant)
        if refused is not None:
            kind, why = refused
            if kind == "after_turn":
                shared.post(shared.hooks.on_after_turn, grant.agent_id)
            elif kind == "stopped" and not grant.told_stopped:
                grant.told_stopped = True
                shared.post(grant.emit, Failed(why, kind="config"))
            return None, refusal(kind, f"orchestrator gateway: {why}", openai=openai)
        return grant, None

    def _refusal(self, grant: Grant) -> tuple[RefusalKind, str] | None:
        shared = self.shared
        if shared.stopped is not None:
            return "stopped", f"the run's model traffic is stopped: {shared.stopped}"
        if grant.refused == "after_turn":
            return "after_turn", "stopped after its turn (cancel --after-turn)"
        if grant.refused is not None:
            return "cancelled", f"{grant.reason or 'cancelled'}; no more requests"
        if shared.fence is not None:
            return "cancelled", f"the run is stopping ({shared.fence}); no more requests"
        if shared.ledger.budget_spent:
            return "cancelled", "the run's budget is spent; no more requests"
        return None

    async def _reserve(self, grant: Grant, amount: float, *, openai: bool) -> Reply | None:
        """Hold ``amount``; while others' reservations stand in the way, wait for them."""
        ledger = self.shared.ledger
        while not ledger.reserve(amount, account=grant.account):
            refused = self._refusal(grant)
            if refused is not None:
                kind, why = refused
                return refusal(kind, f"orchestrator gateway: {why}", openai=openai)
            left = grant.deadline - time.monotonic()
            if (
                left <= 0
                or ledger.reserved_usd <= 0
                or not ledger.could_fit(amount, account=grant.account)
            ):
                why = self._budget_refusal(grant, amount)
                self.shared.post(grant.emit, Failed(why, kind="budget"))
                return refusal("budget", f"orchestrator gateway: {why}", openai=openai)
            settled = self._settled
            try:
                async with asyncio.timeout(min(left, 1.0)):
                    await settled.wait()
            except TimeoutError:
                pass  # look again: a charge from the other thread does not signal us
        return None

    def _budget_refusal(self, grant: Grant, amount: float) -> str:
        ledger = self.shared.ledger
        account = ledger.account(grant.account) if grant.account is not None else None
        if account is not None and account.cap is not None and amount > account.left:
            left, total, whose = max(account.cap - account.spent, 0.0), account.cap, "the task's"
        else:
            left = max((ledger.budget_usd or 0.0) - ledger.spent_usd, 0.0)
            total, whose = ledger.budget_usd or 0.0, "the run's"
        return (
            f"budget: the request may cost up to ${amount:.4f}, ${left:.4f} of {whose} "
            f"${total:.2f} is left; not sent"
        )

    def _settle(self, ex: _Exchange) -> None:
        tokens = ex.tokens if ex.tokens is not None else ex.scanner.tokens
        if ex.dialect.openai and ex.answered is not None and not (tokens.total_in or tokens.output):
            # No usage came (a stream cut short, a server that does not report it): charge
            # an estimate from above rather than nothing.
            output = min(ex.answered // CHARS_PER_TOKEN + 1, ex.facts.max_tokens)
            tokens = TokenCount(input=input_estimate(ex.prepared.raw), output=output)
        cost = self.shared.prices.cost(ex.facts.model, tokens) if ex.metered else 0.0
        self.shared.ledger.settle(ex.reserved, cost, account=ex.grant.account)
        self._settled.set()
        self._settled = asyncio.Event()
        if ex.metered and (tokens.total_in or tokens.output):
            self.shared.post(ex.grant.emit, Usage(tokens.total_in, tokens.output, cost))

    # --- forward, retrying ------------------------------------------------------------------

    async def _forward(self, request: Request, ex: _Exchange) -> Answer:
        shared = self.shared
        url = ex.upstream.url.rstrip("/") + ex.dialect.upstream_path(request.path_qs)
        headers = upstream_headers(request.headers.items(), ex.upstream.credential)
        for attempt in itertools.count():
            async with self.limiter.slot() as permit:
                answer: Reply | None = None
                try:
                    upstream = await self.client.post(url, ex.prepared.raw, headers)
                    if upstream.status >= 400:
                        try:
                            data = await upstream.read(self.shared.settings.read_timeout)
                        finally:
                            self.client.release(upstream)
                except (TimeoutError, OSError) as exc:  # UpstreamError is an OSError
                    self.limiter.report(permit, "other")
                    failure = ApiFailure("transient", f"upstream unreachable: {_what(exc)}")
                else:
                    if upstream.status < 400:
                        # What goes wrong from here (the agent hanging up) is not retried.
                        self.limiter.report(permit, "ok")
                        try:
                            return await self._relay(request, upstream, ex, permit)
                        finally:
                            self.client.release(upstream)
                    failure = classify(upstream.status, upstream.headers, data)
                    # The gateway retries what can be retried: a client must not try again.
                    kept = [h for h in client_headers(upstream.items)
                            if h[0].lower() != "x-should-retry"]  # fmt: skip
                    answer = Reply(upstream.status, data, (*kept, ("x-should-retry", "false")))
                    slow = failure.kind in ("rate_limit", "overload")
                    hold = failure.retry_after if slow else None
                    if hold is not None:
                        hold = min(hold, shared.settings.retry.retry_after_cap)
                    self.limiter.report(permit, "slow_down" if slow else "other", retry_after=hold)
            if failure.run_wide:
                shared.stop_traffic(failure.message)
            delay = self._retry_delay(failure, attempt, ex.grant)
            if delay is None:
                if answer is None:
                    message = f"orchestrator gateway: {failure.message}"
                    if ex.dialect.openai:
                        raw = error_body("server_error", message)
                    else:
                        raw = json.dumps({"type": "error", "error": {"type": "api_error",
                                          "message": message}}).encode()  # fmt: skip
                    return Full(502, raw, [("content-type", "application/json")])
                return _local(answer)
            wait = f"{delay:.1f} s" if delay >= 1 else f"{delay * 1000:.0f} ms"
            note = f"[gateway: {failure.message}; retrying in {wait} (try {attempt + 2})]\n"
            shared.post(ex.grant.emit, Text(note))
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _retry_delay(self, failure: ApiFailure, attempt: int, grant: Grant) -> float | None:
        """Seconds to wait before trying again, or None: 429 and 529 while the attempt's
        deadline allows, other transient failures a few times, the rest never."""
        settings = self.shared.settings
        if failure.kind == "fatal" or self.shared.stopped is not None:
            return None
        if failure.kind == "transient" and attempt + 1 >= settings.transient_tries:
            return None
        if grant.closed or grant.refused is not None or self.shared.fence is not None:
            return None
        if failure.retry_after is not None:
            delay = min(max(failure.retry_after, 0.0), settings.retry.retry_after_cap)
        else:
            delay = backoff(attempt, settings.retry)
        if time.monotonic() + delay >= grant.deadline:
            return None
        return delay

    async def _relay(
        self, request: Request, upstream: Response, ex: _Exchange, permit: Permit
    ) -> Answer:
        """Pass a successful answer through, reading its usage on the way."""
        headers = client_headers(upstream.items)
        streamed = upstream.headers.get("content-type", "").startswith("text/event-stream")
        silence = self.shared.settings.read_timeout
        if not streamed:
            data = await upstream.read(silence)
            ex.answered = len(data)
            if ex.metered:
                ex.tokens = ex.dialect.usage_of(data)
            return Full(upstream.status, data, headers)
        out = request.stream(upstream.status, headers)
        ex.answered = 0
        sink = _Sink(ex, out, upstream)
        try:
            await upstream.pipe(sink, silence, sink.end)
        except (UpstreamError, TimeoutError) as exc:
            # Headers are gone: say it the way the API does, as an error event mid-stream.
            message = f"orchestrator gateway: the upstream stream broke off ({_what(exc)})"
            out.write(_stream_error(ex.dialect, message))
        finally:
            sink.stop()
        if ex.scanner.error == ex.dialect.overloaded:
            self.limiter.report(permit, "slow_down")
        return out  # the server ends it


class _Sink:
    """Where a stream's pieces go as the upstream's connection reads them: counted, scanned
    for usage, filtered (OpenAI's usage chunk the agent did not ask for) and written to the
    agent's connection, framed as the response's chunks, with no task switch. While the
    agent reads slower than the upstream sends, the upstream is not read from."""

    __slots__ = ("_check", "_ex", "_hide", "_out", "_transport", "_upstream")

    def __init__(self, ex: _Exchange, out: Stream, upstream: Response) -> None:
        self._ex = ex
        self._hide = ex.dialect.stream_filter(ex.prepared)
        self._out = out
        self._transport = out.transport
        self._upstream = upstream
        self._check: asyncio.TimerHandle | None = None

    def __call__(self, piece: bytes) -> None:
        ex = self._ex
        ex.answered = (ex.answered or 0) + len(piece)
        ex.scanner.feed(piece)
        if self._hide is not None:
            piece = self._hide.feed(piece)
        self._write(piece)

    def end(self) -> None:
        """The upstream's answer is complete: the agent's is too, at once."""
        try:
            if self._hide is not None:
                self._write(self._hide.rest())
            self._out.end()
        except ConnectionResetError:
            pass  # the agent has gone; its handler is being cancelled

    def _write(self, piece: bytes) -> None:
        if not piece:
            return
        self._out.write(piece)
        transport = self._transport
        if self._check is None and transport.get_write_buffer_size() > HIGH_WATER:
            self._upstream.pause()
            self._check = asyncio.get_running_loop().call_later(0.005, self._drained)

    def _drained(self) -> None:
        if self._transport.is_closing() or self._transport.get_write_buffer_size() < LOW_WATER:
            self._check = None
            self._upstream.resume()
        else:
            self._check = asyncio.get_running_loop().call_later(0.005, self._drained)

    def stop(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None


def _local(answer: Reply) -> Full:
    return Full(answer.status, answer.body, answer.headers)


def _stream_error(dialect: Dialect, message: str) -> bytes:
    if dialect.name == "anthropic":
        event = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"
    return stream_error(dialect.name, message)


def _what(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
