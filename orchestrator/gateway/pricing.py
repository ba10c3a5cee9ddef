"""What a request to the Messages API costs: a price per model, and the arithmetic.

Prices are USD per million tokens, as Anthropic's pricing page lists them. Input tokens come
in three kinds that cost differently: plain input, cache writes (1.25x input for the default
5-minute cache, 2x for the 1-hour one) and cache reads (0.1x input). A plan's ``prices:``
replaces the input and output rate of a model (cache rates follow from the input rate).

A model the table does not know is priced at the most expensive rates it does know, so that
a budget stays a ceiling when a new or mistyped model name comes along. Dated snapshot names
(``claude-haiku-4-5-20251001``, ``gpt-4o-2024-08-06``) are priced as their alias. OpenAI's
models (for codex and aider through the gateway) are listed too.

Pure and synchronous: no event loop, no SDK.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator.plan.model import Price

MTOK = 1_000_000
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0
CACHE_READ = 0.1


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_write: float
    cache_write_1h: float
    cache_read: float

    @classmethod
    def standard(cls, input: float, output: float) -> ModelPrice:
        """The usual cache multipliers applied to an input and an output rate."""
        return cls(
            input, output, input * CACHE_WRITE_5M, input * CACHE_WRITE_1H, input * CACHE_READ
        )

    @property
    def input_ceiling(self) -> float:
        """The dearest rate an input token of a request that writes only the default
        5-minute cache may be billed at (for upper bounds)."""
        return max(self.input, self.cache_write, self.cache_read)


@dataclass(frozen=True, slots=True)
class TokenCount:
    """The tokens one request used, as the API's ``usage`` reports them.

    ``cache_write`` counts every cache-creation token; ``cache_write_1h`` is the part of them
    written to the 1-hour cache (the API's ``cache_creation.ephemeral_1h_input_tokens``).
    """

    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @property
    def total_in(self) -> int:
        """Every input token, cached or not: what the progress file calls "in"."""
        return self.input + self.cache_write + self.cache_read


def _std(input: float, output: float) -> ModelPrice:
    return ModelPrice.standard(input, output)


def _oai(input: float, output: float, cached: float) -> ModelPrice:
    return ModelPrice(input, output, input, input, cached)


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    # Opus: $5/$25 since 4.5; 4 and 4.1 kept the old $15/$75.
    "claude-opus-5": _std(5.0, 25.0),
    "claude-opus-4-8": _std(5.0, 25.0),
    "claude-opus-4-7": _std(5.0, 25.0),
    "claude-opus-4-6": _std(5.0, 25.0),
    "claude-opus-4-5": _std(5.0, 25.0),
    "claude-opus-4-1": _std(15.0, 75.0),
    "claude-opus-4-0": _std(15.0, 75.0),
    "claude-opus-4": _std(15.0, 75.0),
    "claude-sonnet-5": _std(2.0, 10.0),
    "claude-sonnet-4-6": _std(3.0, 15.0),
    "claude-sonnet-4-5": _std(3.0, 15.0),
    "claude-sonnet-4-0": _std(3.0, 15.0),
    "claude-sonnet-4": _std(3.0, 15.0),
    "claude-3-7-sonnet": _std(3.0, 15.0),
    "claude-haiku-4-5": _std(1.0, 5.0),
    "claude-3-5-haiku": _std(0.8, 4.0),
    "claude-3-haiku": _std(0.25, 1.25),
    # OpenAI (codex, aider): no charge for writing the cache, cached input at its own rate.
    "gpt-5": _oai(1.25, 10.0, 0.125),
    "gpt-5.1": _oai(1.25, 10.0, 0.125),
    "gpt-5-codex": _oai(1.25, 10.0, 0.125),
    "gpt-5.1-codex": _oai(1.25, 10.0, 0.125),
    "gpt-5-mini": _oai(0.25, 2.0, 0.025),
    "gpt-5.1-codex-mini": _oai(0.25, 2.0, 0.025),
    "gpt-5-nano": _oai(0.05, 0.4, 0.005),
    "gpt-4.1": _oai(2.0, 8.0, 0.5),
    "gpt-4.1-mini": _oai(0.4, 1.6, 0.1),
    "gpt-4.1-nano": _oai(0.1, 0.4, 0.025),
    "gpt-4o": _oai(2.5, 10.0, 1.25),
    "gpt-4o-mini": _oai(0.15, 0.6, 0.075),
    "o3": _oai(2.0, 8.0, 0.5),
    "o4-mini": _oai(1.1, 4.4, 0.275),
    "codex-mini": _oai(1.5, 6.0, 0.375),
}

_SNAPSHOT = re.compile(r"(?:-\d{8}|-\d{4}-\d{2}-\d{2}|-latest|@\d{8})$")


class PriceTable:
    """Prices by model name: the defaults, a plan's overrides, and a safe fallback."""

    def __init__(
        self,
        overrides: Iterable[tuple[str, Price]] = (),
        *,
        base: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        table = dict(base)
        for model, price in overrides:
            table[model] = ModelPrice.standard(price.input_per_mtok, price.output_per_mtok)
        self.prices: Mapping[str, ModelPrice] = table
        self.fallback = ModelPrice(
            input=max(p.input for p in table.values()),
            output=max(p.output for p in table.values()),
            cache_write=max(p.cache_write for p in table.values()),
            cache_write_1h=max(p.cache_write_1h for p in table.values()),
            cache_read=max(p.cache_read for p in table.values()),
        )
        """The dearest known rate of each kind: what an unknown model is charged."""

    def price_of(self, model: str) -> ModelPrice:
        """The model's price; a snapshot's alias; else the `fallback`."""
        price = self.prices.get(model)
        if price is None:
            price = self.prices.get(_SNAPSHOT.sub("", model))
        return price if price is not None else self.fallback

    def knows(self, model: str) -> bool:
        return self.price_of(model) is not self.fallback

    def cost(self, model: str, tokens: TokenCount) -> float:
        """USD for one request's usage."""
        p = self.price_of(model)
        write_5m = max(tokens.cache_write - tokens.cache_write_1h, 0)
        micro = (
            tokens.input * p.input
            + write_5m * p.cache_write
            + tokens.cache_write_1h * p.cache_write_1h
            + tokens.cache_read * p.cache_read
            + tokens.output * p.output
        )
        return micro / MTOK

    def upper_bound(self, model: str, *, input_tokens: int, max_output: int) -> float:
        """The most a request may cost: every input token at the dearest input rate, and
        ``max_output`` output tokens."""
        p = self.price_of(model)
        return (input_tokens * p.input_ceiling + max_output * p.output) / MTOK
