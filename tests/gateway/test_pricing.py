"""Prices per model and what a request costs: plain arithmetic, no loop, no SDK."""

from __future__ import annotations

import pytest

from orchestrator.gateway.pricing import DEFAULT_PRICES, ModelPrice, PriceTable, TokenCount
from orchestrator.plan.model import Price

TABLE = PriceTable()


@pytest.mark.parametrize(
    ("model", "input", "output"),
    [
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-sonnet-4-6", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
        ("claude-opus-4-6", 5.0, 25.0),
        ("claude-opus-4-1", 15.0, 75.0),
        ("claude-sonnet-4-5-20250929", 3.0, 15.0),  # a dated snapshot is priced as its alias
        ("claude-haiku-4-5-20251001", 1.0, 5.0),
        ("claude-3-7-sonnet-latest", 3.0, 15.0),
    ],
)
def test_known_models_have_their_list_price(model: str, input: float, output: float) -> None:
    price = TABLE.price_of(model)
    assert (price.input, price.output) == (input, output)
    assert TABLE.knows(model)


def test_cache_rates_follow_the_input_rate() -> None:
    price = TABLE.price_of("claude-sonnet-4-6")
    assert price.cache_write == pytest.approx(3.75)
    assert price.cache_write_1h == pytest.approx(6.0)
    assert price.cache_read == pytest.approx(0.30)


@pytest.mark.parametrize("model", ["claude-opus-9", "gpt-9-turbo", "claude-sonnet-4-5-typo", ""])
def test_an_unknown_model_costs_the_dearest_known_rates(model: str) -> None:
    price = TABLE.price_of(model)
    assert not TABLE.knows(model)
    assert price.input == max(p.input for p in DEFAULT_PRICES.values())
    assert price.output == max(p.output for p in DEFAULT_PRICES.values())
    assert price.output >= 75.0


def test_plan_prices_override_and_extend_the_table() -> None:
    table = PriceTable([("claude-sonnet-4-6", Price(1.0, 2.0)), ("my-model", Price(100, 500))])
    assert table.price_of("claude-sonnet-4-6") == ModelPrice.standard(1.0, 2.0)
    assert table.price_of("my-model").output == 500
    assert table.fallback.output == 500  # the fallback stays the dearest, overrides included
    assert table.price_of("claude-haiku-4-5").input == 1.0


def test_cost_counts_each_kind_of_token_at_its_rate() -> None:
    tokens = TokenCount(
        input=1_000_000, output=100_000, cache_write=200_000, cache_write_1h=50_000,
        cache_read=2_000_000,
    )  # fmt: skip
    # sonnet: 1M in at $3 + 150k 5m-writes at $3.75 + 50k 1h-writes at $6 + 2M reads at $0.30
    #         + 100k out at $15
    expected = 3.0 + 0.5625 + 0.30 + 0.60 + 1.5
    assert TABLE.cost("claude-sonnet-4-6", tokens) == pytest.approx(expected)
    assert tokens.total_in == 3_200_000


def test_the_upper_bound_prices_input_as_cache_writes_and_the_whole_output() -> None:
    bound = TABLE.upper_bound("claude-sonnet-4-6", input_tokens=100_000, max_output=8192)
    assert bound == pytest.approx(100_000 * 3.75 / 1e6 + 8192 * 15 / 1e6)
    real = TABLE.cost("claude-sonnet-4-6", TokenCount(input=100_000, output=8192))
    assert real <= bound


def test_openai_models_are_priced_with_their_cached_input_rate() -> None:
    assert TABLE.price_of("gpt-4o-2024-08-06") is TABLE.price_of("gpt-4o")
    tokens = TokenCount(input=1_000_000, output=1_000_000, cache_read=1_000_000)
    assert TABLE.cost("gpt-5", tokens) == pytest.approx(1.25 + 10.0 + 0.125)
