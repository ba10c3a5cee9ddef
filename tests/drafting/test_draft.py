"""`orchestrator plan "GOAL"`: a real `orchestrator` process drafts a plan through its own
model gateway, with the real SDK, against the local fake Messages API's scripted answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, quiet_env
from fakeapi import serve_in_thread, text

from orchestrator.drafting.survey import build_command, survey
from orchestrator.plan.load import load_plan

CANARY = "sk-ant-canary-draft-5e1c0a7b93d2"
VALID = """Here is the plan.

```yaml
name: greet
workspace: ../ws
defaults: {agent: claude, model: claude-sonnet-4-6}
limits: {max_concurrency: 2, max_agents: 9, budget_usd: 3}
build: {command: python -m pytest -q}
tasks:
  - id: code
    prompt: Write greet.py with hello().
  - id: tests
    depends_on: [code]
    prompt: Write tests/test_greet.py.
```
"""
CYCLE = VALID.replace("depends_on: [code]", "depends_on: [tests]")
UNKNOWN_KEY = VALID.replace("max_agents: 9", "max_agents: 9, max_agent: 3")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    (f.cwd / "ws").mkdir()
    (f.cwd / "ws" / "README.md").write_text("# greet\nA tiny greeting library.\n")
    (f.cwd / "ws" / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (f.cwd / "plans").mkdir()
    yield f
    f.close()


def draft(fleet: Fleet, url: str, *extra: str) -> tuple[int, str, str]:
    env = quiet_env(ANTHROPIC_API_KEY=CANARY, ANTHROPIC_BASE_URL=url)
    done = fleet.cli("plan", "Greet people", "--workspace", "ws", "-o", "plans/greet.yaml",
                     *extra, env=env, timeout=60)  # fmt: skip
    return done.code, done.out, done.err


def test_a_valid_draft_is_written_with_its_summary_and_nothing_runs(fleet: Fleet) -> None:
    with serve_in_thread([text(VALID, input_tokens=1000, output_tokens=200)]) as api:
        code, out, err = draft(fleet, api.url)
    assert code == 0, out + err
    plan = load_plan(fleet.cwd / "plans" / "greet.yaml")
    assert [t.id for t in plan.tasks] == ["code", "tests"]
    assert plan.workspace == (fleet.cwd / "ws").resolve()
    assert "drafted by claude-sonnet-4-6 in first try: 1000 in / 200 out tokens" in out
    assert "plans/greet.yaml: ok - 2 tasks in 2 waves" in out
    assert "critical path: code -> tests" in out
    assert "cost estimate: ~$" in out
    assert "budget_usd=3 caps it" in out
    assert not (fleet.cwd / "agent-responses").exists(), "nothing ran"
    (request,) = api.requests
    assert request.api_key == CANARY  # added by the gateway, which metered the 1000/200 above
    asked = json.dumps(request.body)
    assert "Greet people" in asked
    assert "README.md" in asked
    assert "A tiny greeting library" in asked
    assert "python -m pytest -q" in asked  # the build command it inferred
    assert "workspace: ../ws" in json.dumps(request.body["system"])


def test_the_errors_of_an_invalid_draft_go_back_to_the_model(fleet: Fleet) -> None:
    with serve_in_thread([text(CYCLE), text(VALID)]) as api:
        code, out, err = draft(fleet, api.url)
    assert code == 0, out + err
    assert "in 2 tries" in out
    second = json.dumps(api.requests[1].body["messages"])
    assert "tasks depend on each other in a cycle" in second
    assert "[cycle]" in second
    assert len(api.requests) == 2


def test_after_two_corrections_the_errors_go_to_the_user_with_exit_2(fleet: Fleet) -> None:
    with serve_in_thread([text(CYCLE), text(UNKNOWN_KEY), text(CYCLE), text(VALID)]) as api:
        code, out, err = draft(fleet, api.url)
    assert code == 2, out + err
    assert len(api.requests) == 3, "at most two corrections"
    assert "plans/greet.yaml:" in err
    assert "[cycle]" in err
    assert "still does not validate after 2 corrections" in err
    assert "Traceback" not in err
    assert "depends_on: [tests]" in (fleet.cwd / "plans" / "greet.yaml").read_text()


def test_an_existing_plan_file_is_not_replaced_without_force(fleet: Fleet) -> None:
    (fleet.cwd / "plans" / "greet.yaml").write_text("mine\n")
    with serve_in_thread([text(VALID)]) as api:
        code, _, err = draft(fleet, api.url)
        assert code == 2
        assert "exists" in err
        assert not api.requests
        code, out, err = draft(fleet, api.url, "--force")
    assert code == 0, out + err


def test_without_a_key_nothing_is_asked_and_it_exits_3(fleet: Fleet) -> None:
    done = fleet.cli("plan", "Greet people", "--workspace", "ws", "-o", "plans/greet.yaml")
    assert done.code == 3
    assert "ANTHROPIC_API_KEY is not set" in done.err


def test_the_survey_is_bounded_and_skips_what_nobody_writes(tmp_path: Path) -> None:
    for n in range(300):
        (tmp_path / f"f{n:03}.py").write_text("")
    (tmp_path / ".git").mkdir()
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.js").write_text("")
    look = survey(tmp_path)
    assert len(look.tree) == 200
    assert look.more == 100
    assert not any(p.startswith((".git", "node_modules")) for p in look.tree)


@pytest.mark.parametrize(
    ("files", "command"),
    [
        ({"package.json": '{"scripts": {"test": "jest"}}'}, "npm test"),
        ({"Makefile": "all:\n\ttrue\ntest: all\n\ttrue\n"}, "make test"),
        ({"Cargo.toml": ""}, "cargo test"),
        ({"go.mod": "module x\n"}, "go test ./..."),
        ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, "python -m pytest -q"),
        ({"notes.txt": ""}, None),
    ],
)
def test_the_build_command_is_inferred_from_the_project_s_files(
    tmp_path: Path, files: dict[str, str], command: str | None
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    assert build_command(tmp_path) == command


def test_a_model_that_does_not_answer_leaves_no_file_and_exits_1(fleet: Fleet) -> None:
    from fakeapi import authentication_error

    with serve_in_thread([authentication_error()]) as api:
        code, out, err = draft(fleet, api.url)
    assert code == 1, out + err
    assert "the model did not answer" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (fleet.cwd / "plans").iterdir()) == []
