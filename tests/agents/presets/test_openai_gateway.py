"""OpenAI-style agents (the codex and aider presets) through the run's model gateway.

The orchestrator holds a canary OpenAI key; the child is a stand-in for codex (the plan's
``presets:`` replaces the argv): a Python program that uses the real ``openai`` SDK as codex
uses its API, configured only by the environment the preset gives it (``OPENAI_BASE_URL``
and ``OPENAI_API_KEY``), against the fake OpenAI API behind the gateway.
"""

from __future__ import annotations

import base64
import sys
import uuid
from pathlib import Path

import pytest
from conftest import FAST_GATEWAY
from fakeopenai import FakeOpenAI, answer

from orchestrator.agents.pool import AgentPool
from orchestrator.agents.presets.table import BUILTIN, gateway_env
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import RunSettings
from orchestrator.gateway.grants import TOKEN_PREFIX, Access
from orchestrator.plan.model import Limits, Plan, Task

CANARY = "sk-proj-canary-" + "7" * 30

FAKE_CODEX = """
import json, os, sys
import openai

client = openai.OpenAI(max_retries=0)  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
stream = client.responses.create(model="gpt-5", input=sys.argv[-1], stream=True)
text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
with open("environ.bin", "wb") as f:
    f.write(open("/proc/self/environ", "rb").read())
print(json.dumps({"type": "agent_message", "text": text}))
"""


def canary_forms() -> list[bytes]:
    key = CANARY.encode()
    return [key, key[::-1], base64.b64encode(key), base64.b64encode(key)[:-4]]


def test_codex_and_aider_are_pointed_at_the_gateway_for_the_apis_it_passes_on() -> None:
    env = {"PATH": "/bin", "OPENAI_API_KEY": CANARY, "OPENAI_BASE_URL": "https://x/v1"}
    both = Access("http://127.0.0.1:5", "orch-gw-t", anthropic=True, openai=True)
    codex = gateway_env(env, BUILTIN["codex"], both, timeout=60)
    assert codex["OPENAI_BASE_URL"] == "http://127.0.0.1:5/v1"
    assert codex["OPENAI_API_KEY"] == codex["CODEX_API_KEY"] == "orch-gw-t"
    assert "ANTHROPIC_API_KEY" not in codex
    aider = gateway_env(env, BUILTIN["aider"], both, timeout=60)
    assert aider["OPENAI_API_BASE"] == "http://127.0.0.1:5/v1"
    assert aider["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:5"
    assert aider["ANTHROPIC_API_KEY"] == aider["OPENAI_API_KEY"] == "orch-gw-t"
    # A gateway without an OpenAI key leaves codex to its own login, and never passes a key.
    only_anthropic = Access("http://127.0.0.1:5", "orch-gw-t", anthropic=True, openai=False)
    codex = gateway_env(env, BUILTIN["codex"], only_anthropic, timeout=60)
    assert "OPENAI_API_KEY" not in codex
    assert codex["OPENAI_BASE_URL"] == "https://x/v1"


async def test_a_codex_child_talks_through_the_gateway_metered_and_never_sees_the_key(
    workspace: Path, responses: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "fake_codex.py"
    program.write_text(FAKE_CODEX)
    reply = answer("done through the gateway", input_tokens=2000, output_tokens=100)
    async with FakeOpenAI(lambda path, body, index: reply, api_key=CANARY) as api:
        monkeypatch.setenv("OPENAI_API_KEY", CANARY)
        monkeypatch.setenv("OPENAI_BASE_URL", api.url)
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CODEX_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        task = Task("t", agent="codex", prompt="Write the thing.", timeout=60.0)
        plan = Plan(
            "test", (task,), workspace=workspace,
            limits=Limits(max_concurrency=2, max_agents=10, spawn_rate=1000.0, grace=0.5,
                          budget_usd=5.0),
            presets=(("codex", (sys.executable, str(program), "{prompt}")),),
        )  # fmt: skip
        settings = RunSettings(
            responses=responses, run_id=f"test-{uuid.uuid4().hex[:12]}", progress_interval=0.01,
            gateway=FAST_GATEWAY,
        )  # fmt: skip
        pool = AgentPool(plan)
        try:
            run = Run(plan, settings, agents=pool)
            await run.execute()
        finally:
            await pool.aclose()

    rec = run.agents["t"]
    assert rec.state == "succeeded", rec.reason
    [request] = api.requests
    assert request.bearer == CANARY  # the gateway added the key upstream
    environ = (workspace / "environ.bin").read_bytes()
    assert TOKEN_PREFIX.encode() in environ  # the child's key was a token of the gateway
    cost = (2000 * 1.25 + 100 * 10.0) / 1e6
    assert rec.cost_usd == pytest.approx(cost)
    assert run.governor.spent_usd == pytest.approx(cost)
    progress = (responses / "t.md").read_text()
    assert "done through the gateway" in progress
    for root in (workspace, responses, tmp_path):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert not any(form in data for form in canary_forms()), path
