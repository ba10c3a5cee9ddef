"""The command line's contract: exit codes, one-line errors, nothing written before a refusal.

The malformed-plan corpus runs in process through Typer's runner (fast, one case a test) and
once more, whole, through a real subprocess; environment errors (exit 3), ``--dry-run``, and
the promise that ``--help`` never pays for ``import anthropic`` are checked end to end.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import ORCH, Fleet, quiet_env, task, tree, write_plan
from plan_corpus import MALFORMED, OK_TASK, Case, write_case
from typer.testing import CliRunner, Result

from orchestrator.cli import app

CASE_IDS = [case[0] for case in MALFORMED]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("ANTHROPIC_API_KEY", "ORCHESTRATOR_DEPTH", "ORCHESTRATOR_MAX_DEPTH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def assert_refused(result: Result, code: int) -> None:
    """The exit code, and an error that is a message, not a crash."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stdout + result.stderr


def where(case: Case, path: Path) -> str:
    """What the error must name: ``file:line:`` when the case knows its line."""
    line = case[4]
    return f"{path.name}:{line}:" if line is not None else path.name


@pytest.mark.parametrize("case", MALFORMED, ids=CASE_IDS)
def test_a_malformed_plan_exits_2_with_rule_and_line_and_writes_nothing(
    in_tmp: Path, case: Case
) -> None:
    path = write_case(in_tmp, case)
    before = tree(in_tmp)
    for command in ("validate", "run"):
        result = invoke(command, path.name)
        assert_refused(result, 2)
        assert f"[{case[3]}]" in result.stderr, command
        assert where(case, path) in result.stderr, command
        assert "error" in result.stderr
        assert tree(in_tmp) == before, command
        assert not (in_tmp / "agent-responses").exists()


def test_the_whole_corpus_through_one_real_validate_process(tmp_path: Path) -> None:
    paths = [write_case(tmp_path, case) for case in MALFORMED]
    good = tmp_path / "good.yaml"
    good.write_text("tasks:\n" + OK_TASK, encoding="utf-8")
    before = tree(tmp_path)
    proc = subprocess.run(  # noqa: TID251 - a sync test, no event loop
        [*ORCH, "validate", good.name, *(p.name for p in paths)],
        cwd=tmp_path,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"{good.name}: ok" in proc.stdout
    for case, path in zip(MALFORMED, paths, strict=True):
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(path.name)]
        assert any(f"[{case[3]}]" in ln for ln in lines), (case[0], lines)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("case_id", ["billion-laughs", "not-utf8"])
def test_a_real_run_process_refuses_malformed_plans_without_traceback(
    fleet: Fleet, case_id: str
) -> None:
    case = next(c for c in MALFORMED if c[0] == case_id)
    path = write_case(fleet.cwd, case)
    before = tree(fleet.cwd)
    done = fleet.cli("run", path.name, "--no-live")
    assert done.code == 2
    assert f"[{case[3]}]" in done.err
    assert "Traceback" not in done.text
    assert tree(fleet.cwd) == before


def test_validate_lists_every_error_not_only_the_first(in_tmp: Path) -> None:
    plan = in_tmp / "multi.yaml"
    plan.write_text(
        "name: multi\n"
        "defaults:\n"
        "  timeout: 20x\n"
        "tasks:\n"
        "  - id: a\n"
        "    agent: scripted\n"
        "    script: [{say: a}]\n"
        "    depends_on: [nope]\n"
        "  - id: ../b\n"
        "    agent: scripted\n"
        "    script: [{say: b}]\n"
        "  - id: c\n"
        "    agent: claud\n"
        "    prompt: hi\n",
        encoding="utf-8",
    )
    result = invoke("validate", "multi.yaml")
    assert_refused(result, 2)
    for rule, line in [
        ("bad-duration", 3),
        ("unknown-dependency", 8),
        ("invalid-id", 9),
        ("unknown-agent", 13),
    ]:
        assert any(
            ln.startswith(f"multi.yaml:{line}:") and f"[{rule}]" in ln
            for ln in result.stderr.splitlines()
        ), (rule, result.stderr)
    assert "hint: did you mean 'claude'?" in result.stderr


def test_validate_checks_every_plan_given_and_fails_if_any_is_bad(in_tmp: Path) -> None:
    good = write_plan(in_tmp / "good.yaml", [task("a"), task("b", deps=("a",))])
    bad = in_tmp / "bad.yaml"
    bad.write_text("tasks: []\n", encoding="utf-8")
    result = invoke("validate", good.name, bad.name)
    assert_refused(result, 2)
    assert "good.yaml: ok - 2 tasks in 2 waves" in result.stdout
    assert "bad.yaml:1:" in result.stderr


def test_validate_of_a_good_plan_exits_0_with_a_summary(in_tmp: Path) -> None:
    plan = write_plan(in_tmp / "p.yaml", [task("a"), task("b"), task("c", deps=("a", "b"))])
    result = invoke("validate", plan.name)
    assert result.exit_code == 0, result.stderr
    assert "p.yaml: ok - 3 tasks in 2 waves; critical path 2 tasks; widest wave 2" in result.stdout
    assert not (in_tmp / "agent-responses").exists()


def test_dry_run_prints_the_waves_and_starts_nothing(in_tmp: Path) -> None:
    plan = write_plan(
        in_tmp / "p.yaml",
        [
            task("a", {"write": {"path": "a.txt", "content": "x"}}),
            task("c", {"run": "touch c.txt"}),
            task("b", deps=("a",)),
            task("d", deps=("b", "c")),
        ],
    )
    (in_tmp / "ws").mkdir()
    before = tree(in_tmp)
    result = invoke("run", plan.name, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "wave 1: a, c",
        "wave 2: b",
        "wave 3: d",
        "dry run: 4 tasks, nothing started",
    ]
    assert tree(in_tmp) == before


def test_dry_run_still_refuses_a_malformed_plan(in_tmp: Path) -> None:
    (in_tmp / "p.yaml").write_text("tasks:\n" + OK_TASK + OK_TASK, encoding="utf-8")
    result = invoke("run", "p.yaml", "--dry-run")
    assert_refused(result, 2)
    assert "[duplicate-id]" in result.stderr


def test_claude_agents_without_an_api_key_exit_3_before_anything_is_written(
    in_tmp: Path,
) -> None:
    (in_tmp / "p.yaml").write_text(
        "workspace: .\ntasks:\n  - id: a\n    agent: claude\n    prompt: hi\n", encoding="utf-8"
    )
    before = tree(in_tmp)
    result = invoke("run", "p.yaml", "--no-live", env={"ANTHROPIC_API_KEY": None})
    assert_refused(result, 3)
    assert "ANTHROPIC_API_KEY" in result.stderr
    assert "hint:" in result.stderr
    assert tree(in_tmp) == before


def test_a_scripted_fixer_of_claude_kind_also_needs_the_key(in_tmp: Path) -> None:
    write_plan(in_tmp / "p.yaml", [task("a")], fixer={"agent": "claude"})
    result = invoke("run", "p.yaml", "--no-live", env={"ANTHROPIC_API_KEY": None})
    assert_refused(result, 3)
    assert "ANTHROPIC_API_KEY" in result.stderr


def test_a_command_agent_whose_program_does_not_exist_exits_3(in_tmp: Path) -> None:
    write_plan(
        in_tmp / "p.yaml",
        [{"id": "x", "agent": "command", "command": ["no-such-agent-program-3141", "{prompt}"],
          "prompt": "hi"}],
    )  # fmt: skip
    result = invoke("run", "p.yaml", "--no-live")
    assert_refused(result, 3)
    assert "'no-such-agent-program-3141'" in result.stderr
    assert "'x'" in result.stderr
    assert not (in_tmp / "agent-responses").exists()


def test_a_workspace_that_is_a_file_exits_3(in_tmp: Path) -> None:
    (in_tmp / "ws").write_text("not a directory\n", encoding="utf-8")
    write_plan(in_tmp / "p.yaml", [task("a")])
    before = tree(in_tmp)
    result = invoke("run", "p.yaml", "--no-live")
    assert_refused(result, 3)
    assert "is not a directory" in result.stderr
    assert tree(in_tmp) == before


def test_a_workspace_whose_parent_is_missing_exits_3(in_tmp: Path) -> None:
    write_plan(in_tmp / "p.yaml", [task("a")], workspace="no/such/dir")
    result = invoke("run", "p.yaml", "--no-live")
    assert_refused(result, 3)
    assert not (in_tmp / "no").exists()
    assert not (in_tmp / "agent-responses").exists()


def test_a_bad_mode_is_a_usage_error(in_tmp: Path) -> None:
    write_plan(in_tmp / "p.yaml", [task("a")])
    result = invoke("run", "p.yaml", "--mode", "turbo")
    assert_refused(result, 2)
    assert "--mode" in result.stderr
    assert not (in_tmp / "agent-responses").exists()


def test_an_unknown_option_is_exit_2(in_tmp: Path) -> None:
    result = invoke("run", "p.yaml", "--bogus")
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr


def test_a_scripted_run_succeeds_end_to_end_and_acts_on_the_workspace(fleet: Fleet) -> None:
    fleet.plan(
        task("a", {"write": {"path": "a.txt", "content": "made by a\n"}}),
        task("b", {"run": "cat a.txt > b.txt"}, deps=("a",)),
    )
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 0, done.text
    assert (fleet.workspace / "b.txt").read_text() == "made by a\n"
    assert (fleet.responses / "REPORT.md").is_file()
    assert "Traceback" not in done.text


def test_a_failed_task_makes_the_run_exit_1(fleet: Fleet) -> None:
    fleet.plan(task("a", {"fail": "no luck"}), task("b", deps=("a",)))
    done = fleet.cli("run", "plan.yaml", "--no-live", "--json")
    assert done.code == 1, done.text
    assert '"state": "failed"' in done.out


def importtime_lines(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    proc = subprocess.run(  # noqa: TID251 - a sync test, no event loop
        [sys.executable, "-X", "importtime", *args],
        cwd=cwd,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = [ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if "|" in ln]
    return proc, modules


def test_importing_the_cli_does_not_import_anthropic(tmp_path: Path) -> None:
    proc, modules = importtime_lines("-c", "import orchestrator.cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "orchestrator.cli" in modules
    assert not [m for m in modules if m.startswith("anthropic")]


def test_help_lists_every_command_without_importing_anthropic(tmp_path: Path) -> None:
    proc, modules = importtime_lines("-m", "orchestrator", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "validate", "status", "watch", "tail", "peek", "wait", "cancel"):
        assert command in proc.stdout
    heavy = ("anthropic", "aiohttp", "orchestrator.engine.scheduler", "orchestrator.gateway")
    assert not [m for m in modules if m.startswith(heavy)]


@pytest.mark.parametrize(
    "args", [("validate", "plan.yaml"), ("run", "plan.yaml", "--dry-run"), ("status", "--json")]
)
def test_light_commands_never_import_anthropic(fleet: Fleet, args: tuple[str, ...]) -> None:
    fleet.plan(task("a"))
    if args[0] == "status":
        assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    proc, modules = importtime_lines("-m", "orchestrator", *args, cwd=fleet.cwd)
    assert proc.returncode == 0, proc.stderr
    assert not [m for m in modules if m.startswith(("anthropic", "aiohttp"))]
