"""What the gateway answers on its own, which headers cross it, and what an upstream error means.

Refusals are Anthropic-shaped errors (``{"type": "error", "error": {"type", "message"}}``)
with a status each client treats as final, so no client retries what the gateway refused
(measured with Claude Code 2.1: 400 is retried, 401, 402 and 403 are not):

=============  ======  =====================  ============================================
refusal        status  error type             when
=============  ======  =====================  ============================================
``token``      401     authentication_error   no token, or one whose attempt has ended
``budget``     402     billing_error          the request's worst case does not fit
``cancelled``  403     permission_error       the agent was cancelled, or the run is
                                              stopping (cancel --all, the budget fence)
``after_turn`` 403     permission_error       cancel --after-turn: its turn is over
``stopped``    403     permission_error       an auth or billing failure stopped the run's
                                              model traffic
``bad``        400     invalid_request_error  a body the gateway cannot price
=============  ======  =====================  ============================================

Each carries ``x-orchestrator-refusal: <refusal>`` so the orchestrator's own claude agent
tells a refusal from an upstream error, and ``x-should-retry: false``, which both SDKs
(Anthropic's and OpenAI's) obey. A refusal to an OpenAI-style request has OpenAI's error
shape (``{"error": {"message", "type", "param", "code"}}``, the refusal as its ``code``) and
the same status. Pure: no aiohttp here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from orchestrator.gateway.limiter import ApiFailure, parse_retry_after
from orchestrator.gateway.metering import error_of
from orchestrator.gateway.openai_wire import error_body

RefusalKind: TypeAlias = Literal["token", "budget", "cancelled", "after_turn", "stopped", "bad"]
REFUSAL_HEADER = "x-orchestrator-refusal"
_STATUS: dict[RefusalKind, tuple[int, str]] = {
    "token": (401, "authentication_error"),
    "budget": (402, "billing_error"),
    "cancelled": (403, "permission_error"),
    "after_turn": (403, "permission_error"),
    "stopped": (403, "permission_error"),
    "bad": (400, "invalid_request_error"),
}

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
        "accept-encoding", "content-encoding",
    }
)  # fmt: skip
"""Headers that describe one hop; the gateway sets its own on each side."""
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete local answer: status, JSON body, headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


def refusal(kind: RefusalKind, message: str, *, openai: bool = False) -> Answer:
    """The gateway's own answer; in OpenAI's error shape for an OpenAI-style request."""
    status, error_type = _STATUS[kind]
    if openai:
        raw = error_body(error_type, message, kind)
    else:
        raw = json.dumps(
            {"type": "error", "error": {"type": error_type, "message": message}}
        ).encode()
    headers = (
        ("content-type", "application/json"), (REFUSAL_HEADER, kind), ("x-should-retry", "false")
    )  # fmt: skip
    return Answer(status, raw, headers)


def upstream_headers(
    client: Iterable[tuple[str, str]], credential: tuple[str, str]
) -> dict[str, str]:
    """The client's request headers for upstream: its own credential replaced by the key."""
    out: dict[str, str] = {}
    for name, value in client:
        low = name.lower()
        if low in HOP_BY_HOP or low in CREDENTIAL_HEADERS:
            continue
        out[name] = value
    out[credential[0]] = credential[1]
    return out


def client_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream's response headers for the client (the body's framing is the gateway's)."""
    return [(k, v) for k, v in upstream if k.lower() not in HOP_BY_HOP]


def classify(status: int, headers: Mapping[str, str], body: bytes) -> ApiFailure:
    """What an upstream error answer means for retrying it (`ApiFailure.kind`).

    401, 403 and billing failures are ``run_wide``: no request of the run can get past them
    (OpenAI says "no credit" with a 429 whose error is ``insufficient_quota``).
    """
    kind, message = error_of(body)
    line = f"API {status} {kind or 'error'}: {message}" if message else f"API {status}"
    retry_after = parse_retry_after(headers)
    billing = (
        kind in ("billing_error", "insufficient_quota")
        or status == 402
        or "credit balance" in message.lower()
    )
    if status in (401, 403) or billing:
        return ApiFailure("fatal", line, run_wide=True)
    if status == 429:
        return ApiFailure("rate_limit", line, retry_after)
    if status in (503, 529) or kind == "overloaded_error":
        return ApiFailure("overload", line, retry_after)
    if status in (408, 409) or status >= 500:
        return ApiFailure("transient", line, retry_after)
    return ApiFailure("fatal", line)
