"""The agents of one run, by kind: each built once, on first use, and closed at the end."""

from __future__ import annotations

from orchestrator.agents.base import Agent
from orchestrator.plan.model import PRESETS, Plan


class AgentPool:
    """``pool(kind)`` gives the run's agent of that kind; ``await pool.aclose()`` at the end.

    Kinds are imported lazily, so a run of scripted agents never imports anthropic.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._agents: dict[str, Agent] = {}

    def __call__(self, kind: str) -> Agent:
        agent = self._agents.get(kind)
        if agent is None:
            agent = self._agents[kind] = self._build(kind)
        return agent

    def _build(self, kind: str) -> Agent:
        if kind == "scripted":
            from orchestrator.agents.scripted import ScriptedAgent

            return ScriptedAgent()
        if kind == "command":
            from orchestrator.agents.command import CommandAgent

            return CommandAgent()
        if kind == "build":
            from orchestrator.agents.build import BuildAgent

            return BuildAgent()
        if kind == "claude":
            from orchestrator.agents.claude.agent import ClaudeAgent

            return ClaudeAgent(self.plan)
        if kind in PRESETS:
            from orchestrator.agents.presets.agent import PresetAgent

            return PresetAgent(kind, self.plan)
        raise KeyError(f"no agent of kind {kind!r} in this build")

    async def aclose(self) -> None:
        for agent in self._agents.values():
            close = getattr(agent, "aclose", None)
            if close is not None:
                await close()
        self._agents.clear()
