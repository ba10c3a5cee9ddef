"""The SDK's values as plain data, and what a failed request means for retrying it.

Only this module and `orchestrator.agents.claude.agent` know the anthropic SDK; it is imported
lazily, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.agents.claude.prompt import text_block
from orchestrator.gateway.grants import Access
from orchestrator.gateway.limiter import ApiFailure, parse_retry_after
from orchestrator.gateway.replies import REFUSAL_HEADER

if TYPE_CHECKING:
    from anthropic.types import Message


# --- failures ---------------------------------------------------------------------------------

_FATAL_MID_STREAM = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "billing_error"}
)


def classify(exc: BaseException) -> ApiFailure | None:
    """What a failed request means for retrying it; None for exceptions that are bugs.

    Mid-stream, this SDK raises transport errors raw (``httpx2.ReadTimeout``,
    ``httpx2.RemoteProtocolError``), not as ``APIConnectionError`` (anthropic-sdk-python
    issue #1919), and an ``error`` event as a bare ``APIStatusError`` whose status is the
    stream's 200. Before the stream, a 529 is ``OverloadedError`` and a read timeout
    ``APITimeoutError``. Auth and billing failures are run-wide: no later request of the run
    is sent with the same key. A refusal of the gateway (a budget, a cancel: it carries
    ``x-orchestrator-refusal``) ends this attempt only.
    """
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        status, kind = exc.status_code, str(exc.type or "error")
        detail = " ".join(str(exc.api_message or exc.message).split())[:300]
        line = f"API {status} {kind}: {detail}" if status != 200 else f"API {kind}: {detail}"
        retry_after = parse_retry_after(exc.response.headers)
        if exc.response.headers.get(REFUSAL_HEADER):
            return ApiFailure("fatal", f"{line} (refused by the gateway)")
        billing = kind == "billing_error" or status == 402 or "credit balance" in detail.lower()
        if status == 200:
            if kind in _FATAL_MID_STREAM:
                return ApiFailure("fatal", f"{line} (mid-stream)")
            return ApiFailure("overload", f"{line} (mid-stream)", retry_after)
        if status == 401:
            return ApiFailure("fatal", f"{line} (check ANTHROPIC_API_KEY)", run_wide=True)
        if billing:
            return ApiFailure("fatal", f"{line} (billing)", run_wide=True)
        if status == 429:
            return ApiFailure("rate_limit", line, retry_after)
        if status in (503, 529) or kind == "overloaded_error":
            return ApiFailure("overload", line, retry_after)
        if status in (408, 409) or status >= 500:
            return ApiFailure("transient", line, retry_after)
        return ApiFailure("fatal", line)
    if isinstance(exc, anthropic.APITimeoutError):
        return ApiFailure("transient", "API request timed out before the answer began")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        why = f": {type(cause).__name__}" if cause is not None else ""
        return ApiFailure("transient", f"API connection failed{why}")
    if isinstance(exc, httpx2.TimeoutException):
        return ApiFailure("transient", f"API stream stalled ({type(exc).__name__})")
    if isinstance(exc, httpx2.RequestError):
        return ApiFailure("transient", f"API stream broke off ({type(exc).__name__}: {exc})")
    if isinstance(exc, TimeoutError):
        return ApiFailure("transient", "API request passed its deadline")
    if isinstance(exc, OSError):
        return ApiFailure("transient", f"API connection failed: {exc}")
    return None


# --- requests --------------------------------------------------------------------------------


def auth_headers(access: Access) -> dict[str, str]:
    """The headers that carry an attempt's token in each of its requests: the SDK's own
    spelling of the name, so that they replace the shared client's placeholder key."""
    return {"Authorization": f"Bearer {access.token}"}


# --- SDK values to plain data -----------------------------------------------------------------


def content(message: Message, *, tools: bool) -> list[dict[str, Any]]:
    """The reply's blocks as request parameters (what is sent back in the next turn)."""
    blocks: list[dict[str, Any]] = []
    for b in message.content:
        if b.type == "text" and b.text:
            blocks.append(text_block(b.text))
        elif b.type == "tool_use" and tools:
            blocks.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
    return blocks
