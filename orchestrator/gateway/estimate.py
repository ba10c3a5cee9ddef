"""What a plan may cost before it runs: expected tokens per model agent, priced by the table.

`validate` and `plan` print it under a plan's summary. The figure is an estimate, stated with
its assumption: each attempt of an agent that talks to an Anthropic model (``claude`` and
``claude-code``) is taken to use `EXPECTED_IN` input and `EXPECTED_OUT` output tokens (about
ten turns over a context that grows to ~30k tokens), priced at its model's rates in the
price table (the plan's ``prices:`` included). ``most`` prices every agent the run may start
(retries and fixers too, up to ``max_agents``) at the dearest model of the plan; a
``budget_usd`` caps what the run can really spend, whatever the estimate says.

Pure: no event loop, no SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.gateway.pricing import PriceTable, TokenCount
from orchestrator.plan.graph import describe
from orchestrator.plan.model import Plan

EXPECTED_IN = 200_000
EXPECTED_OUT = 12_000
MODEL_KINDS = frozenset({"claude", "claude-code"})
"""Kinds whose requests go to Anthropic's API through the gateway (priced by the table)."""


@dataclass(frozen=True, slots=True)
class Estimate:
    model_agents: int
    """Tasks whose agent talks to a model (one attempt each)."""
    tokens_in: int
    tokens_out: int
    expected_usd: float
    """Every model task once, at its model's price."""
    most_usd: float
    """Every agent the run may start, at the dearest model of the plan."""
    budget_usd: float | None

    def as_json(self) -> dict[str, object]:
        """The ``estimate`` object of `validate --json` (docs/commands.md)."""
        return {
            "model_agents": self.model_agents, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "expected_usd": round(self.expected_usd, 6),
            "most_usd": round(self.most_usd, 6), "budget_usd": self.budget_usd,
            "per_attempt": {"tokens_in": EXPECTED_IN, "tokens_out": EXPECTED_OUT},
        }  # fmt: skip

    def line(self) -> str:
        if not self.model_agents:
            return "cost: no agent talks to a model ($0 in model requests)"
        cap = f"; budget_usd={self.budget_usd:g} caps it" if self.budget_usd is not None else ""
        return (
            f"cost estimate: ~${self.expected_usd:.2f} for {self.model_agents} model agent(s) "
            f"(~{self.tokens_in // 1000}k in / {self.tokens_out // 1000}k out tokens, at "
            f"~{EXPECTED_IN // 1000}k/{EXPECTED_OUT // 1000}k per attempt); up to "
            f"~${self.most_usd:.2f} if every retry and fixer runs{cap}"
        )


def estimate(plan: Plan) -> Estimate:
    """The plan's `Estimate` (see the module for the assumption behind it)."""
    table = PriceTable(plan.prices)
    per_attempt = TokenCount(input=EXPECTED_IN, output=EXPECTED_OUT)
    costs = [table.cost(t.model, per_attempt) for t in plan.tasks if t.agent in MODEL_KINDS]
    dearest = max(costs, default=0.0)
    if plan.fixer.agent in MODEL_KINDS:
        fixer_model = plan.fixer.model or plan.fixer.base.model
        dearest = max(dearest, table.cost(fixer_model, per_attempt))
    return Estimate(
        model_agents=len(costs),
        tokens_in=len(costs) * EXPECTED_IN,
        tokens_out=len(costs) * EXPECTED_OUT,
        expected_usd=sum(costs),
        most_usd=describe(plan).most_agents * dearest,
        budget_usd=plan.limits.budget_usd,
    )
