"""``network: gateway``: an agent reaches the run's gateway, and nothing else on the network.

A command agent whose task asks for the key gets a gateway token and URL; in a sandbox of
its own network namespace it calls the fake Messages API through the gateway with the real
anthropic SDK (relayed from its loopback to the gateway's Unix socket), while a TCP server
this test starts on the host's 127.0.0.1 stays out of its reach. ``network: full`` is the
control: there the same server answers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeMessagesAPI, Reply, text
from fakes import wait_until_no_marked

from orchestrator.engine.scheduler import Run
from orchestrator.plan.model import Network, Plan, SandboxSpec, Task
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

SUPPORT = probe("none")
pytestmark = [
    pytest.mark.skipif(not SUPPORT.can_sandbox, reason="cannot make a network namespace here"),
    pytest.mark.timeout(120),
]
CANARY = "sk-ant-canary-" + "5" * 28
AGENT = """
import socket, sys
import anthropic

client = anthropic.Anthropic()
reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}])
print("model said:", reply.content[0].text)
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3) as s:
        print("other server:", s.recv(64).decode())
except OSError as exc:
    print("other server unreachable:", type(exc).__name__)
"""


@pytest.fixture
async def other_server() -> AsyncIterator[int]:
    """A canary TCP server on the host's loopback that greets whoever connects."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"canary")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def run_agent(
    network: Network,
    port: int,
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Run, str, int]:
    (workspace / "agent.py").write_text(AGENT)
    task = Task("t", agent="command", command=(sys.executable, "agent.py", str(port)),
                pass_env=("ANTHROPIC_API_KEY",))  # fmt: skip
    plan = Plan("p", (task,), workspace=workspace, sandbox=SandboxSpec(network=network))
    decision = decide(plan, SUPPORT, responses=responses, scratch=tmp_path / "scratch")
    assert decision.confinement is not None
    assert decision.confinement.network == network

    def respond(body: dict[str, Any], index: int) -> Reply | None:
        return text("hello from the fake API")

    async with FakeMessagesAPI(respond, api_key=CANARY) as api:
        monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        run = make_run(task, sandbox=decision.confinement)
        await run.execute()
        calls = len(api.requests)
    return run, (responses / "t.md").read_text(), calls


async def test_an_agent_reaches_the_gateway_and_nothing_else(
    other_server: int,
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, md, calls = await run_agent("gateway", other_server, make_run, workspace, responses,
                                     tmp_path, monkeypatch)  # fmt: skip
    assert run.agents["t"].state == "succeeded", md
    assert "model said: hello from the fake API" in md
    assert calls == 1, "through the gateway to the upstream"
    assert "other server unreachable" in md, md
    assert "canary" not in md
    assert await wait_until_no_marked(run.settings.run_id) == [], "the relay died with it"


async def test_with_full_network_the_other_server_answers(
    other_server: int,
    make_run: Callable[..., Run],
    workspace: Path,
    responses: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the canary server is reachable when the sandbox keeps the network."""
    run, md, _ = await run_agent("full", other_server, make_run, workspace, responses,
                                 tmp_path, monkeypatch)  # fmt: skip
    assert run.agents["t"].state == "succeeded", md
    assert "model said: hello from the fake API" in md
    assert "other server: canary" in md, md
