"""Command-line conventions: -h, --version, completion, choices and exit codes in --help,
numeric options checked, output that suits a pipe, NO_COLOR, and --json where text is printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, quiet_env, task

from orchestrator import __version__


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_dash_h_is_help_and_version_prints_the_version(fleet: Fleet) -> None:
    for args in (("-h",), ("run", "-h"), ("peek", "-h")):
        done = fleet.call(*args)
        assert done.code == 0, done.text
        assert "Usage:" in done.out
    assert fleet.call("--version").out == f"orchestrator {__version__}\n"


def test_help_lists_choices_exit_codes_and_completion(fleet: Fleet) -> None:
    assert "async|batch" in fleet.call("run", "--help").out
    assert "--install-completion" in fleet.call("--help").out
    for command in ("run", "validate", "status", "peek", "tail", "wait", "cancel", "watch",
                    "report", "serve", "init"):  # fmt: skip
        assert "Exit codes" in " ".join(fleet.call(command, "--help").out.split()), command


def test_shell_completion_script_is_printed_for_bash(fleet: Fleet) -> None:
    env = quiet_env(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    done = fleet.cli("--show-completion", "bash", env=env)
    assert done.code == 0, done.text
    assert "complete" in done.out


@pytest.mark.parametrize(
    "args",
    [("peek", "a", "-n", "-3"), ("wait", "a", "--timeout", "-1"), ("run", "p.yaml", "--mode", "x"),
     ("run", "p.yaml", "--max-concurrency", "0"), ("serve", "--port", "70000")],
)  # fmt: skip
def test_a_bad_number_or_choice_exits_2(fleet: Fleet, args: tuple[str, ...]) -> None:
    fleet.plan(task("a"), name="p")
    done = fleet.call(*args)
    assert done.code == 2, done.text


def test_status_piped_is_plain_text_with_nothing_cut(fleet: Fleet) -> None:
    long_words = "word " * 40
    fleet.plan(task("a", {"say": long_words.strip()}), task("b", deps=("a",)))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    done = fleet.cli("status", env=quiet_env(COLUMNS="80"))
    assert done.code == 0, done.text
    assert "┃" not in done.out
    assert "│" not in done.out
    assert "\x1b[" not in done.out
    assert "tasks: 2 of 2 done (2 succeeded)" in done.out
    assert any(line.startswith("b ") for line in done.out.splitlines())


def test_no_color_is_honoured_on_a_terminal(fleet: Fleet) -> None:
    fleet.plan(task("a"))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    coloured = fleet.cli("status", env=quiet_env(FORCE_COLOR="1", NO_COLOR="", TERM="xterm"))
    assert "\x1b[" in coloured.out, "FORCE_COLOR stands for a terminal here"
    plain = fleet.cli("status", env=quiet_env(FORCE_COLOR="1", NO_COLOR="1", TERM="xterm"))
    assert "│" in plain.out  # a terminal's table ...
    assert "\x1b[3" not in plain.out  # ... without colours


def test_validate_and_dry_run_print_json(fleet: Fleet) -> None:
    fleet.plan(task("a"), task("b", deps=("a",)))
    (fleet.cwd / "bad.yaml").write_text("tasks:\n  - id: a\n    agent: nope\n")
    done = fleet.cli("validate", "plan.yaml", "bad.yaml", "--json")
    assert done.code == 2
    good, bad = (json.loads(line) for line in done.out.splitlines())
    assert (good["ok"], good["tasks"], good["waves"]) == (True, 2, 2)
    assert (good["critical_path"], good["critical_path_tasks"]) == (2, ["a", "b"])
    assert good["estimate"]["model_agents"] == 0
    assert good["estimate"]["expected_usd"] == 0
    assert bad["ok"] is False
    (error,) = bad["errors"]
    assert (error["line"], error["rule"]) == (3, "unknown-agent")
    text = fleet.cli("validate", "plan.yaml")
    assert "critical path: a -> b" in text.out
    fleet.plan(task("a"), task("m", agent="claude", prompt="hi", script=None, deps=("a",)),
               limits={"budget_usd": 4})  # fmt: skip
    priced = json.loads(fleet.cli("validate", "plan.yaml", "--json").out)
    said = fleet.cli("validate", "plan.yaml").out
    cost = priced["estimate"]
    assert (cost["model_agents"], cost["budget_usd"]) == (1, 4)
    assert cost["expected_usd"] > 0
    assert cost["most_usd"] >= cost["expected_usd"]
    assert f"~${cost['expected_usd']:.2f} for 1 model agent(s)" in said
    assert f"up to ~${cost['most_usd']:.2f}" in said
    assert priced["critical_path_tasks"] == ["a", "m"]
    fleet.plan(task("a"), task("b", deps=("a",)))
    dry = fleet.cli("run", "plan.yaml", "--dry-run", "--json")
    assert dry.code == 0, dry.text
    assert json.loads(dry.out) == {
        "plan": "plan", "file": "plan.yaml", "tasks": 2, "waves": [["a"], ["b"]],
        "workspace": str(fleet.workspace), "started": False,
    }  # fmt: skip
    assert not fleet.responses.exists()


def test_the_end_of_a_run_says_what_happened(fleet: Fleet) -> None:
    fleet.plan(
        task("a"), task("b", {"block": "needs a key nobody has"}), task("c", deps=("b",)),
        fixer={"agent": "scripted", "script": [{"fail": "cannot"}]},
        limits={"budget_usd": 3},
    )  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 1
    lines = done.out.splitlines()
    assert "1 of 3 tasks succeeded" in next(ln for ln in lines if "tasks succeeded" in ln)
    assert "build: none ran" in lines
    (esc,) = [ln for ln in lines if ln.startswith("escalated: b: ")]
    assert "; next: " in esc
    assert "cost: $0.0000 of $3.00 budget" in lines
    assert f"report: {Path('agent-responses') / 'REPORT.md'}" in lines
    as_json = json.loads(fleet.cli("run", "plan.yaml", "--no-live", "--json").out)
    totals = as_json["totals"]
    assert (totals["tasks"], totals["succeeded"], totals["budget_usd"]) == (3, 1, 3)
    assert [e["task"] for e in totals["escalations"]] == ["b"]
    assert as_json["report"].endswith("REPORT.md")
    assert {row["id"] for row in as_json["board"]} == {"a", "b", "c"}


def test_every_command_that_prints_has_json(fleet: Fleet, tmp_path: Path) -> None:
    fleet.plan(task("a", {"say": "hello"}), task("b", {"fail": "no"}))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 1
    peeked = json.loads(fleet.call("peek", "a", "-n", "2", "--json").out)
    assert peeked["agent"] == "a"
    assert peeked["lines"][-1].startswith("status: succeeded")
    waited = fleet.call("wait", "a", "b", "--json")
    assert waited.code == 1
    assert json.loads(waited.out) == {
        "ended": {"a": "succeeded", "b": "failed"}, "timed_out": False, "exit_code": 1,
    }  # fmt: skip
    cancelled = json.loads(fleet.call("cancel", "a", "--json").out)
    assert cancelled == {"orchestrator": False, "stopped": []}
    report = json.loads(fleet.call("report", "--json").out)
    assert report["report"].endswith("REPORT.md")
    assert report["timeline"].endswith("timeline.svg")
    target = tmp_path / "starter"
    target.mkdir()
    made = json.loads(fleet.call("init", str(target), "--json").out)
    assert made == {"plan": str(target / "plan.yaml"), "schema": str(target / "plan.schema.json")}
    for command in ("peek", "wait", "cancel", "report", "init", "serve", "status", "validate",
                    "runs"):  # fmt: skip
        assert "--json" in fleet.call(command, "--help").out, command
