"""The plan's sandbox keys, and what a run does on a machine that can or cannot confine it."""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import Fleet

from orchestrator.errors import EnvironmentProblem, PlanErrors
from orchestrator.plan.load import load_plan
from orchestrator.plan.model import Plan, Task
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import Support, probe

NO_BWRAP = Support(None, "no bwrap on PATH (hint: install bubblewrap)", None, "")


def load(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(text + '\ntasks:\n  - {id: a, agent: command, command: ["true"]}\n')
    return load_plan(path)


@pytest.mark.parametrize(
    ("text", "memory", "pids"),
    [
        ("limits: {memory: 512m, pids: 64}", 512 * 2**20, 64),
        ("limits: {memory: 4g}", 4 * 2**30, 1024),
        ("limits: {memory: 2GiB}", 2 * 2**30, 1024),
        ("limits: {memory: 1073741824}", 2**30, 1024),
        ("", 4 * 2**30, 1024),
    ],
)
def test_limits_memory_and_pids(tmp_path: Path, text: str, memory: int, pids: int) -> None:
    plan = load(tmp_path, text)
    assert (plan.limits.memory, plan.limits.pids) == (memory, pids)


@pytest.mark.parametrize(
    ("text", "rule", "line"),
    [
        ("limits: {memory: lots}", "bad-limit", 1),
        ("limits: {memory: 512}", "bad-limit", 1),
        ("limits: {pids: 2}", "bad-limit", 1),
        ("sandbox: sometimes", "bad-value", 1),
        ("sandbox: {mode: required, network: wifi}", "bad-value", 1),
        ("sandbox: {mood: required}", "unknown-field", 1),
    ],
)
def test_bad_sandbox_keys_are_refused_with_a_line(
    tmp_path: Path, text: str, rule: str, line: int
) -> None:
    with pytest.raises(PlanErrors) as caught:
        load(tmp_path, text)
    (error,) = caught.value.errors
    assert (error.rule, error.where.line) == (rule, line), str(error)


def test_sandbox_mapping_paths_are_relative_to_the_plan(tmp_path: Path) -> None:
    plan = load(tmp_path, "sandbox: {mode: off, network: none, writable: [out, ~/cache]}")
    assert plan.sandbox.mode == "off"
    assert plan.sandbox.network == "none"
    assert plan.sandbox.writable[0] == tmp_path / "out"
    assert plan.sandbox.writable[1] == Path("~/cache").expanduser()


def api_plan(mode: str | None = None) -> Plan:
    from orchestrator.plan.model import SandboxSpec

    return Plan("p", (Task("a", agent="claude", prompt="x"),), sandbox=SandboxSpec(mode=mode))  # type: ignore[arg-type]


def test_required_refuses_a_machine_without_bwrap(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        decide(api_plan(), NO_BWRAP, responses=tmp_path)
    assert "sandbox: required" in str(caught.value)
    assert "install bubblewrap" in str(caught.value)
    assert caught.value.exit_code == 3


def test_best_effort_runs_unconfined_with_a_warning(tmp_path: Path) -> None:
    decision = decide(api_plan("best-effort"), NO_BWRAP, responses=tmp_path)
    assert decision.confinement is None
    assert decision.warnings == ("no sandbox: no bwrap on PATH (hint: install bubblewrap)",)
    assert decision.summary == "best-effort: agents run unconfined"


def test_off_runs_unconfined_quietly(tmp_path: Path) -> None:
    decision = decide(api_plan("off"), NO_BWRAP, responses=tmp_path)
    assert (decision.confinement, decision.warnings) == (None, ())


def test_network_gateway_is_its_own_namespace_without_a_warning(tmp_path: Path) -> None:
    support = probe()
    if not support.can_sandbox:
        pytest.skip("cannot make a sandbox here")
    from orchestrator.plan.model import SandboxSpec

    plan = Plan("p", api_plan().tasks, sandbox=SandboxSpec(network="gateway"))
    decision = decide(plan, support, responses=tmp_path)
    assert decision.confinement is not None
    assert decision.confinement.network == "gateway"
    assert not [w for w in decision.warnings if "network" in w]
    assert "network gateway" in decision.summary


def test_validate_says_how_agents_would_be_confined(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        fleet.plan({"id": "a", "agent": "command", "command": ["true"]}, sandbox="best-effort")
        done = fleet.cli("validate", "plan.yaml")
        assert done.code == 0, done.text
        (line,) = [x for x in done.out.splitlines() if ": sandbox " in x]
        expected = "bwrap (pid, mount, ipc namespaces" if probe().can_sandbox else "unconfined"
        assert expected in line
    finally:
        fleet.close()


def no_bwrap_env(tmp_path: Path) -> dict[str, str]:
    """Our environment with a PATH that has no bwrap (and what the runs here need)."""
    import os
    import sys

    from clirun import quiet_env

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "true", "env", "setpriv"):
        src = f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else f"/bin/{tool}"
        (bin_dir / tool).symlink_to(src)
    return quiet_env(PATH=f"{os.path.dirname(sys.executable)}:{bin_dir}")


def test_a_run_that_requires_a_sandbox_it_cannot_have_starts_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        fleet.plan({"id": "a", "agent": "command", "command": ["true"]}, sandbox="required")
        done = fleet.cli("run", "plan.yaml", "--no-live", env=no_bwrap_env(tmp_path))
        assert done.code == 3, done.text
        assert "sandbox: required" in done.err
        assert not (fleet.responses / ".run").exists(), "nothing started"
    finally:
        fleet.close()


def test_best_effort_without_a_sandbox_warns_at_start_in_status_and_in_the_report(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path)
    try:
        fleet.plan({"id": "a", "agent": "command", "command": ["true"]})
        env = no_bwrap_env(tmp_path)
        done = fleet.cli("run", "plan.yaml", "--no-live", env=env)
        assert done.code == 0, done.text
        warning = "no sandbox: no bwrap on PATH"
        assert f"warning: {warning}" in done.err
        shown = fleet.cli("status", env=env)
        assert f"status: warning: {warning}" in shown.err
        report = (fleet.responses / "REPORT.md").read_text()
        assert "- sandbox: best-effort: agents run unconfined" in report
        assert f"- warning: {warning}" in report
    finally:
        fleet.close()
