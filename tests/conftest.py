"""Shared fixtures: plans built in code, a run harness, and a /proc scan for leftovers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fakeapi import fake_api, fake_client  # noqa: F401  (shared fixtures)
from fakes import kill_with_groups, leftover_run_processes, marked_pids

from orchestrator.agents.pool import AgentPool
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import RunSettings
from orchestrator.gateway.limiter import RetryPolicy
from orchestrator.gateway.shared import GatewaySettings
from orchestrator.plan.model import Limits, Plan, Say, Sleep, Step, Task
from orchestrator.sandbox.confinement import Confinement

ROOT = Path(__file__).resolve().parent.parent
FAST_GATEWAY = GatewaySettings(
    read_timeout=5.0,
    retry=RetryPolicy(base_delay=0.01, max_delay=0.05, retry_after_cap=1.0),
    drain=1.0,
)
"""The model gateway with test timings: backoff in milliseconds, retry-after capped at 1 s."""
# Every process a test starts (`python -m orchestrator`, fakes, agents) imports the package
# from this checkout, whatever the virtualenv's editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = config


_CONFIG: pytest.Config | None = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Print a failure the moment it happens, not only in the summary at the end: a CI run
    cut off by its time limit still shows why each test that failed before the cut did."""
    reporter = _CONFIG and _CONFIG.pluginmanager.get_plugin("terminalreporter")
    if report.failed and reporter:
        reporter.write_line("")
        reporter.write_sep("!", f"FAILED {report.nodeid} ({report.when})")
        reporter.write_line(report.longreprtext[-8000:])


@pytest.fixture(autouse=True)
def nothing_outlives_its_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Processes of a run that a test left behind are killed when it ends, and named: one
    leaked fork-and-exit loop once slowed every later test of a CI run past its time limit.
    Only this session's runs (see `leftover_run_processes`)."""
    yield
    ours = tmp_path_factory.getbasetemp().resolve()
    left = leftover_run_processes(ours)
    if not left:
        return
    for _ in range(50):
        kill_with_groups(still := leftover_run_processes(ours))
        if not still:
            break
        time.sleep(0.02)  # noqa: TID251 - a sync fixture teardown, no event loop
    reporter = _CONFIG and _CONFIG.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line(f"\nleft behind by this test, killed: pids {left[:10]}")


def scripted(tid: str, *steps: Step, deps: tuple[str, ...] = (), **kw: Any) -> Task:
    return Task(tid, agent="scripted", script=steps or (Say(tid),), depends_on=deps, **kw)


def sleeper(tid: str, seconds: float, deps: tuple[str, ...] = (), **kw: Any) -> Task:
    return scripted(tid, Sleep(seconds), Say(f"{tid} done"), deps=deps, **kw)


def processes_with_marker(marker: str) -> list[int]:
    """Pids whose environment holds ORCHESTRATOR_RUN_ID=<marker> (zombies excluded)."""
    return marked_pids(marker)


@pytest.fixture(autouse=True)
def no_ambient_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests are offline: a key (or endpoint) in the caller's environment never reaches one;
    tests that need them set their own (a canary, the fake API's URL)."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def own_state_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shadow repositories and checkout pools of a test live in its own temporary directory
    (the XDG directories every user can set), never in the home directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / ".xdg-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".xdg-cache"))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def responses(tmp_path: Path) -> Path:
    r = tmp_path / "responses"
    (r / ".run").mkdir(parents=True)
    return r


@pytest_asyncio.fixture
async def make_run(workspace: Path, responses: Path) -> AsyncIterator[Callable[..., Run]]:
    """Build runs of tasks written in code; every agent pool they made is closed afterwards."""
    pools: list[AgentPool] = []

    def build(
        *tasks: Task,
        mode: str = "async",
        gateway: GatewaySettings = FAST_GATEWAY,
        sandbox: Confinement | None = None,
        **limits: Any,
    ) -> Run:
        limits.setdefault("max_concurrency", 16)
        limits.setdefault("max_agents", 100)
        limits.setdefault("spawn_rate", 1000.0)
        limits.setdefault("grace", 0.5)
        plan = Plan("test", tuple(tasks), workspace=workspace, limits=Limits(**limits))
        settings = RunSettings(
            responses=responses, run_id=f"test-{uuid.uuid4().hex[:12]}", mode=mode,  # type: ignore[arg-type]
            progress_interval=0.01, gateway=gateway, sandbox=sandbox,
        )  # fmt: skip
        pools.append(AgentPool(plan))
        return Run(plan, settings, agents=pools[-1])

    yield build
    for pool in pools:
        await pool.aclose()
