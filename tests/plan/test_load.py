"""Loading plan files: malformed ones are refused with file:line and a rule; valid ones load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_corpus import MALFORMED, Case, write_case

from orchestrator.errors import PlanError, PlanErrors
from orchestrator.plan.fields import parse_duration
from orchestrator.plan.graph import graph_of
from orchestrator.plan.load import MAX_ERRORS, MAX_FILE_BYTES, load_plan
from orchestrator.plan.model import Block, Fail, Plan, Price, Run, Say, Sleep, Task, Write

PLANS = Path(__file__).resolve().parents[2] / "plans"


def write(directory: Path, text: str, name: str = "plan.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[PlanError]:
    with pytest.raises(PlanErrors) as info:
        load_plan(path)
    return info.value.errors


def assert_plan_or_plan_errors(path: Path) -> None:
    """Loading gives a plan or PlanErrors with at least one error; any other exception fails."""
    try:
        load_plan(path)
    except PlanErrors as exc:
        errors = exc.errors
    else:
        return
    assert errors


def without_lines(plan: Plan) -> tuple[Task, ...]:
    return tuple(dataclasses.replace(task, line=0) for task in plan.tasks)


# --- the malformed corpus -------------------------------------------------------------------


def test_corpus_is_large_and_covers_every_rule() -> None:
    ids = [case[0] for case in MALFORMED]
    assert len(ids) >= 45
    assert len(set(ids)) == len(ids)
    rules = {case[3] for case in MALFORMED}
    assert rules >= {
        "cycle", "unknown-dependency", "duplicate-id", "duplicate-key", "invalid-id",
        "reserved-id", "unknown-field", "wrong-type", "bad-limit", "bad-duration",
        "unknown-agent", "missing-command", "missing-prompt", "missing-script", "unknown-step",
        "empty-plan", "tasks-and-batches", "not-utf8", "syntax", "file-not-found", "not-a-file",
        "too-deep", "alias-bomb", "unknown-preset", "not-for-agent", "bad-value",
    }  # fmt: skip
    assert {case[1] for case in MALFORMED} >= {".yaml", ".toml", ".txt", "/"}


@pytest.mark.parametrize("case", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_plan_is_refused_with_its_rule_and_line(tmp_path: Path, case: Case) -> None:
    _case_id, _suffix, _content, rule, line = case
    path = write_case(tmp_path, case)
    errors = errors_of(path)
    matching = [e for e in errors if e.rule == rule]
    assert matching, [e.render() for e in errors]
    if line is not None:
        assert matching[0].where.line == line, matching[0].render()
    for error in errors:
        rendered = error.render()
        assert rendered.startswith(str(path))
        assert f"[{error.rule}]" in rendered
        assert "\n" not in rendered
        assert error.where.path == str(path)


def test_errors_come_sorted_by_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "limits:\n  max_agents: 0\n"
        "tasks:\n"
        "  - id: a\n    agent: scripted\n    script: [{say: a}]\n    depend_on: [b]\n"
        "  - id: ../b\n    prompt: hi\n",
    )
    lines = [e.where.line for e in errors_of(path)]
    assert lines == sorted(lines)


def test_every_independent_error_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: many\n"
        "limits:\n"
        "  max_concurrency: 0\n"  # 3: bad-limit
        "defaults:\n"
        "  timeout: soon\n"  # 5: bad-duration
        "tasks:\n"
        "  - id: a\n"
        "    agent: scripted\n"
        "    script: [{sya: hi}]\n"  # 9: unknown-step
        "    depend_on: [b]\n"  # 10: unknown-field
        "  - id: a/b\n"  # 11: invalid-id
        "    prompt: hi\n"
        "  - id: c\n"  # 13: missing-command
        "    agent: command\n"
        "  - id: d\n"
        "    prompt: hi\n"
        "    depends_on: [nope]\n"  # 17: unknown-dependency
        "  - id: d\n"  # 18: duplicate-id
        "    prompt: hi\n",
    )
    found = {(e.rule, e.where.line) for e in errors_of(path)}
    assert found >= {
        ("bad-limit", 3),
        ("bad-duration", 5),
        ("unknown-step", 9),
        ("unknown-field", 10),
        ("invalid-id", 11),
        ("missing-command", 13),
        ("unknown-dependency", 17),
        ("duplicate-id", 18),
    }


def test_hints_suggest_the_closest_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tasks:\n"
        "  - id: models\n    prompt: hi\n"
        "  - id: api\n    prompt: hi\n    depend_on: [models]\n"
        "  - id: ui\n    prompt: hi\n    depends_on: [modles]\n    agent: claud\n",
    )
    hints = {e.rule: e.hint for e in errors_of(path)}
    assert hints["unknown-field"] == "did you mean 'depends_on'?"
    assert hints["unknown-dependency"] == "did you mean 'models'?"
    assert hints["unknown-agent"] == "did you mean 'claude'?"


def test_a_cycle_is_printed_as_a_chain(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "defaults: {agent: scripted}\n"
        "tasks:\n"
        "  - {id: a, script: [{say: a}], depends_on: [b]}\n"
        "  - {id: b, script: [{say: b}], depends_on: [c]}\n"
        "  - {id: c, script: [{say: c}], depends_on: [a]}\n"
        "  - {id: d, script: [{say: d}], depends_on: [a]}\n",
    )
    (error,) = errors_of(path)
    assert error.rule == "cycle"
    assert error.message.endswith("a -> b -> c -> a")


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("limits:\n  max_agents", "9" * 400, "bad-limit"),
        ("limits:\n  budget_usd", ".nan", "bad-limit"),
        ("limits:\n  spawn_rate", ".inf", "bad-limit"),
        ("limits:\n  grace", "-1", "bad-limit"),
        ("defaults:\n  timeout", "9" * 400, "bad-duration"),
        ("defaults:\n  timeout", "9" * 5000 + "s", "bad-duration"),
        ("defaults:\n  stall_timeout", "31d", "bad-duration"),
        ("defaults:\n  max_turns", "0", "bad-value"),
        ("defaults:\n  model", "[a, b]", "wrong-type"),
        ("name", '"\\e[2J"', "bad-name"),
        ("workspace", "{a: b}", "wrong-type"),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, field: str, value: str, rule: str) -> None:
    path = write(tmp_path, f"{field}: {value}\ntasks:\n  - {{id: a, prompt: hi}}\n")
    assert [e.rule for e in errors_of(path)] == [rule]


@pytest.mark.parametrize(
    "task_id",
    ["build-docs", "build-api", "fix-tests", "Report", "report", "lint.2", "FIX-api-1",
     "Build-2", "v1.10", "a.0", "build"],
)  # fmt: skip
def test_every_id_of_the_grammar_is_a_task_id(tmp_path: Path, task_id: str) -> None:
    path = write(tmp_path, f"tasks:\n  - {{id: '{task_id}', prompt: hi}}\n")
    assert [t.id for t in load_plan(path).tasks] == [task_id]


def test_only_an_id_that_would_write_over_the_report_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "tasks:\n  - {id: REPORT, prompt: hi}\n")
    assert [e.rule for e in errors_of(path)] == ["reserved-id"]


def test_toml_errors_point_at_the_line_that_holds_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'name = "b"\n'
        'defaults.agent = "scripted"\n'
        'defaults.timout = "1m"\n'  # 3
        "\n"
        "[limits]\n"
        "max_agents = 0\n"  # 6
        "\n"
        "[[batches]]\n"
        'name = "one"\n'
        "\n"
        "[[batches.tasks]]\n"
        'id = "a"\n'
        'script = [{ say = "a" }]\n'
        "\n"
        "[[batches.tasks]]\n"
        'id = "b"\n'
        'script = [{ sya = "b" }]\n'  # 17
        "\n"
        "[batches.tasks.env]\n"
        '"1X" = "y"\n'  # 20
        "\n"
        "[[batches]]\n"
        'name = "two"\n'
        "tasks = [\n"
        '  { id = "c", script = [{ say = "c" }] },\n'
        '  { id = "d", script = [{ say = "d" }], depends_on = ["zz"] },\n'  # 26
        '  {id="e",script=[{say="e"}],timeout=true},\n'  # 27
        "]\n",
        "plan.toml",
    )
    assert [(e.rule, e.where.line) for e in errors_of(path)] == [
        ("unknown-field", 3),
        ("bad-limit", 6),
        ("unknown-step", 17),
        ("bad-env", 20),
        ("unknown-dependency", 26),
        ("wrong-type", 27),
    ]


def test_thousands_of_errors_are_cut_short(tmp_path: Path) -> None:
    lines = ["tasks:"] + [f"  - {{id: t{i}, prompt: hi, depends_on: [nope]}}" for i in range(1000)]
    errors = errors_of(write(tmp_path, "\n".join(lines) + "\n"))
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1].rule == "too-many-errors"
    assert errors[-1].message == "800 more errors not shown"


def test_an_empty_yaml_document_is_an_empty_plan(tmp_path: Path) -> None:
    (error,) = errors_of(write(tmp_path, "---\n...\n"))
    assert error.rule == "empty-plan"


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (error,) = errors_of(path)
    assert error.rule == "too-large"


def test_a_missing_file_suggests_the_other_suffix(tmp_path: Path) -> None:
    write(tmp_path, "tasks: []\n", "plan.yml")
    (error,) = errors_of(tmp_path / "plan.yaml")
    assert error.rule == "file-not-found"
    assert "plan.yml" in error.hint


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bytes_give_a_plan_or_plan_errors(tmp_path: Path, content: bytes | str) -> None:
    for suffix in (".yaml", ".toml"):
        path = tmp_path / f"fuzz{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        assert_plan_or_plan_errors(path)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = st.sampled_from([
    "id", "agent", "prompt", "depends_on", "command", "shell", "script", "retry_script",
    "timeout", "env", "pass_env", "name", "permission_mode", "allowed_tools", "args",
])  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tasks=st.lists(st.dictionaries(_KEYS, _VALUES, max_size=6), max_size=4), extra=_VALUES)
def test_plan_shaped_nonsense_gives_plan_errors(
    tmp_path: Path, tasks: list[dict[str, object]], extra: object
) -> None:
    path = tmp_path / "shaped.yaml"
    document = {
        "tasks": tasks,
        "limits": extra,
        "build": {"command": extra, "after": extra},
        "presets": {"codex": {"command": extra}, "aider": extra},
        "fixer": {"fix_timeouts": extra},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert_plan_or_plan_errors(path)


# --- valid plans ----------------------------------------------------------------------------


def test_the_claude_code_example_plan_loads() -> None:
    plan = load_plan(PLANS / "claude-code-example.yaml")
    assert any(task.permission_mode for task in plan.tasks)


@pytest.mark.parametrize("name", ["example.yaml", "example-batches.yaml", "example.toml"])
def test_example_plans_load_cleanly(name: str) -> None:
    plan = load_plan(PLANS / name)
    assert plan.tasks
    assert all(task.agent == "scripted" for task in plan.tasks)
    assert plan.build.command


def test_the_examples_describe_one_graph_in_three_forms() -> None:
    tasks_form = load_plan(PLANS / "example.yaml")
    batches_form = load_plan(PLANS / "example-batches.yaml")
    toml_form = load_plan(PLANS / "example.toml")
    assert graph_of(tasks_form.tasks) == graph_of(batches_form.tasks)
    assert without_lines(tasks_form) == without_lines(toml_form)
    assert (tasks_form.limits, tasks_form.build, tasks_form.fixer) == (
        toml_form.limits,
        toml_form.build,
        toml_form.fixer,
    )
    assert batches_form.form == "batches"
    assert tasks_form.form == toml_form.form == "tasks"


def test_batches_depend_on_the_previous_batch_unless_told_otherwise(tmp_path: Path) -> None:
    batches = load_plan(
        write(
            tmp_path,
            "defaults: {agent: scripted}\n"
            "batches:\n"
            "  - name: foundations\n"
            "    tasks:\n"
            "      - {id: models, script: [{say: m}]}\n"
            "      - {id: config, script: [{say: c}]}\n"
            "  - name: features\n"
            "    tasks:\n"
            "      - {id: api, script: [{say: a}], depends_on: [models]}\n"
            "      - {id: ui, script: [{say: u}]}\n"
            "      - {id: lint, script: [{say: l}], depends_on: []}\n"
            "  - name: release\n"
            "    tasks:\n"
            "      - {id: notes, script: [{say: n}]}\n",
        )
    )
    tasks = load_plan(
        write(
            tmp_path,
            "defaults: {agent: scripted}\n"
            "tasks:\n"
            "  - {id: models, script: [{say: m}]}\n"
            "  - {id: config, script: [{say: c}]}\n"
            "  - {id: api, script: [{say: a}], depends_on: [models]}\n"
            "  - {id: ui, script: [{say: u}], depends_on: [models, config]}\n"
            "  - {id: lint, script: [{say: l}]}\n"
            "  - {id: notes, script: [{say: n}], depends_on: [api, ui, lint]}\n",
            "tasks.yaml",
        )
    )
    assert graph_of(batches.tasks) == graph_of(tasks.tasks)
    assert batches.form == "batches"
    assert tasks.form == "tasks"
    assert batches.batches == (
        ("foundations", ("models", "config")),
        ("features", ("api", "ui", "lint")),
        ("release", ("notes",)),
    )
    assert [t.batch for t in batches.tasks] == ["foundations"] * 2 + ["features"] * 3 + ["release"]
    assert all(t.batch is None for t in tasks.tasks)


RICH_YAML = """\
name: rich
defaults:
  agent: command
  model: claude-opus-4
  timeout: 1h30m
  stall_timeout: 90s
  max_turns: 12
  env: {MODE: "fast"}
  pass_env: [GOPROXY]
limits:
  max_concurrency: 8
  max_agents: 100
  max_depth: 0
  budget_usd: 2.5
  spawn_rate: 10
  grace: 500ms
build:
  command: make lint && make test
  timeout: 5m
  max_fix_cycles: 0
  after: [lint]
fixer:
  agent: scripted
  script: [{say: fixing}]
  timeout: 2m
prices:
  claude-opus-4: {input: 15, output: 75}
tasks:
  - id: lint
    command: ruff check --fix "src dir"
  - id: test
    command: ["pytest", "-q", "{prompt}"]
    prompt: run the tests
    depends_on: [lint, lint]
    env: {DEBUG: 1, MASK: 0755}
    timeout: 45
  - id: shell-task
    command: "make all && echo done"
    stall_timeout: 90s
    pass_env: []
  - id: script
    agent: scripted
    script:
      - say: hello
      - sleep: 0.25
      - write: {path: out/a.txt, content: "a\\n"}
      - run: echo hi
      - block: need a schema
      - fail: gave up
    retry_script:
      - say: second try
  - id: ask
    agent: claude-code
    prompt: Write the docs
"""

RICH_TOML = """\
name = "rich"

[defaults]
agent = "command"
model = "claude-opus-4"
timeout = "1h30m"
stall_timeout = 90
max_turns = 12
env = { MODE = "fast" }
pass_env = ["GOPROXY"]

[limits]
max_concurrency = 8
max_agents = 100
max_depth = 0
budget_usd = 2.5
spawn_rate = 10
grace = 0.5

[build]
command = "make lint && make test"
timeout = "5m"
max_fix_cycles = 0
after = ["lint"]

[fixer]
agent = "scripted"
script = [{ say = "fixing" }]
timeout = 120

[prices.claude-opus-4]
input = 15
output = 75.0

[[tasks]]
id = "lint"
command = 'ruff check --fix "src dir"'

[[tasks]]
id = "test"
command = ["pytest", "-q", "{prompt}"]
prompt = "run the tests"
depends_on = ["lint", "lint"]
timeout = 45

[tasks.env]
DEBUG = "1"
MASK = "0755"

[[tasks]]
id = "shell-task"
command = "make all && echo done"
stall_timeout = 90
pass_env = []

[[tasks]]
id = "script"
agent = "scripted"
script = [
  { say = "hello" },
  { sleep = "250ms" },
  { write = { path = "out/a.txt", content = "a\\n" } },
  { run = "echo hi" },
  { block = "need a schema" },
  { fail = "gave up" },
]
retry_script = [{ say = "second try" }]

[[tasks]]
id = "ask"
agent = "claude-code"
prompt = "Write the docs"
"""


def test_every_field_parses(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, RICH_YAML))
    lint, test, shell, script, ask = plan.tasks
    assert plan.name == "rich"
    assert (lint.command, lint.shell) == (('ruff check --fix "src dir"',), True)
    assert (lint.agent, lint.model, lint.timeout, lint.stall_timeout) == (
        "command",
        "claude-opus-4",
        5400.0,
        90.0,
    )
    assert (lint.max_turns, lint.env, lint.pass_env) == (12, (("MODE", "fast"),), ("GOPROXY",))
    assert (test.command, test.shell) == (("pytest", "-q", "{prompt}"), False)
    assert test.depends_on == ("lint",)
    assert test.env == (("DEBUG", "1"), ("MASK", "0755"))  # as written, not as YAML 1.1 reads it
    assert test.timeout == 45.0
    assert (shell.command, shell.shell, shell.pass_env) == (("make all && echo done",), True, ())
    assert script.script == (
        Say("hello"),
        Sleep(0.25),
        Write("out/a.txt", "a\n"),
        Run("echo hi"),
        Block("need a schema"),
        Fail("gave up"),
    )
    assert script.retry_script == (Say("second try"),)
    assert lint.retry_script is None
    assert (ask.agent, ask.prompt) == ("claude-code", "Write the docs")
    assert [t.line for t in plan.tasks] == [29, 31, 37, 41, 52]
    limits = plan.limits
    assert (limits.max_concurrency, limits.max_agents, limits.max_depth) == (8, 100, 0)
    assert (limits.budget_usd, limits.spawn_rate, limits.grace) == (2.5, 10.0, 0.5)
    assert (plan.build.command, plan.build.shell) == (("make lint && make test",), True)
    assert (plan.build.timeout, plan.build.max_fix_cycles, plan.build.after) == (
        300.0,
        0,
        ("lint",),
    )
    assert plan.fixer.agent == "scripted"
    assert plan.fixer.script == (Say("fixing"),)
    assert (plan.fixer.timeout, plan.fixer.model, plan.fixer.max_turns) == (120.0, None, None)
    assert plan.prices == (("claude-opus-4", Price(15.0, 75.0)),)


def test_yaml_and_toml_forms_load_the_same_plan(tmp_path: Path) -> None:
    from_yaml = load_plan(write(tmp_path, RICH_YAML))
    from_toml = load_plan(write(tmp_path, RICH_TOML, "plan.toml"))
    assert without_lines(from_yaml) == without_lines(from_toml)
    assert dataclasses.replace(from_yaml, tasks=(), source=None) == dataclasses.replace(
        from_toml, tasks=(), source=None
    )
    assert [t.line for t in from_toml.tasks] == [35, 39, 50, 56, 69]


PRESETS_YAML = """\
name: presets
defaults:
  agent: claude-code
  permission_mode: acceptEdits
  allowed_tools: [Edit, "Bash(git diff *)", Edit]
  args: [--effort, low]
presets:
  claude-code:
    command: [my-claude, -p, "{flags}", --, "{prompt}"]
  aider: {command: [aider, "--message={prompt}", "{flags}"]}
fixer:
  agent: scripted
  script: [{say: fixing}]
  fix_timeouts: true
tasks:
  - id: inherits
    prompt: Write the docs
  - id: own
    prompt: Write the tests
    permission_mode: plan
    allowed_tools: []
    args: [--verbose, --verbose, "two words"]
  - id: codex
    agent: codex
    prompt: Review
    args: [--full-auto]
  - id: scripted
    agent: scripted
    script: [{say: hi}]
"""

PRESETS_TOML = """\
name = "presets"

[defaults]
agent = "claude-code"
permission_mode = "acceptEdits"
allowed_tools = ["Edit", "Bash(git diff *)", "Edit"]
args = ["--effort", "low"]

[presets.claude-code]
command = ["my-claude", "-p", "{flags}", "--", "{prompt}"]

[presets.aider]
command = ["aider", "--message={prompt}", "{flags}"]

[fixer]
agent = "scripted"
script = [{ say = "fixing" }]
fix_timeouts = true

[[tasks]]
id = "inherits"
prompt = "Write the docs"

[[tasks]]
id = "own"
prompt = "Write the tests"
permission_mode = "plan"
allowed_tools = []
args = ["--verbose", "--verbose", "two words"]

[[tasks]]
id = "codex"
agent = "codex"
prompt = "Review"
args = ["--full-auto"]

[[tasks]]
id = "scripted"
agent = "scripted"
script = [{ say = "hi" }]
"""


@pytest.mark.parametrize(
    ("text", "name"), [(PRESETS_YAML, "plan.yaml"), (PRESETS_TOML, "plan.toml")]
)
def test_preset_keys_templates_and_fix_timeouts_parse(tmp_path: Path, text: str, name: str) -> None:
    plan = load_plan(write(tmp_path, text, name))
    inherits, own, codex, scripted = plan.tasks
    assert (inherits.agent, inherits.permission_mode) == ("claude-code", "acceptEdits")
    assert inherits.allowed_tools == ("Edit", "Bash(git diff *)")  # each tool once
    assert inherits.args == ("--effort", "low")
    assert (own.permission_mode, own.allowed_tools) == ("plan", ())  # [] replaces the default
    assert own.args == ("--verbose", "--verbose", "two words")  # repeats kept, as argv
    assert (codex.agent, codex.args, codex.permission_mode) == (
        "codex",
        ("--full-auto",),
        "acceptEdits",
    )
    # Defaults reach every task; a scripted task ignores them, and that is no mistake.
    assert (scripted.agent, scripted.args) == ("scripted", ("--effort", "low"))
    assert plan.presets == (
        ("claude-code", ("my-claude", "-p", "{flags}", "--", "{prompt}")),
        ("aider", ("aider", "--message={prompt}", "{flags}")),
    )
    assert plan.fixer.fix_timeouts is True


def test_yaml_and_toml_forms_of_the_preset_keys_load_the_same_plan(tmp_path: Path) -> None:
    from_yaml = load_plan(write(tmp_path, PRESETS_YAML))
    from_toml = load_plan(write(tmp_path, PRESETS_TOML, "plan.toml"))
    assert without_lines(from_yaml) == without_lines(from_toml)
    assert dataclasses.replace(from_yaml, tasks=(), source=None) == dataclasses.replace(
        from_toml, tasks=(), source=None
    )


def test_the_preset_keys_and_fix_timeouts_default_to_off(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, "tasks:\n  - {id: a, agent: claude-code, prompt: hi}\n"))
    (task,) = plan.tasks
    assert (task.permission_mode, task.allowed_tools, task.args) == (None, (), ())
    assert (plan.presets, plan.fixer.fix_timeouts) == ((), False)


def test_a_preset_only_key_on_another_agent_says_which_agents_use_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tasks:\n"
        "  - {id: a, agent: aider, prompt: hi, allowed_tools: [Edit]}\n"
        "  - {id: b, prompt: hi, args: [-v]}\n",
    )
    errors = errors_of(path)
    assert [(e.rule, e.where.line) for e in errors] == [("not-for-agent", 2), ("not-for-agent", 3)]
    assert (
        errors[0].message
        == "task 'a': allowed_tools is for claude-code agents; agent 'aider' ignores it"
    )
    assert errors[1].hint == "remove args, or set agent: aider | claude-code | codex"


def test_an_unknown_preset_name_suggests_the_closest(tmp_path: Path) -> None:
    path = write(
        tmp_path, "presets:\n  claude_code: {command: [claude]}\ntasks:\n  - {id: a, prompt: hi}\n"
    )
    (error,) = errors_of(path)
    assert (error.rule, error.where.line, error.hint) == (
        "unknown-preset",
        2,
        "did you mean 'claude-code'?",
    )


def test_defaults_fill_only_what_a_task_leaves_out(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            "defaults: {agent: scripted, model: m1, timeout: 1m, max_turns: 3, env: {A: x}}\n"
            "tasks:\n"
            "  - {id: plain, script: [{say: a}]}\n"
            "  - {id: own, script: [{say: b}], model: m2, timeout: 2m, max_turns: 4, env: {B: y},"
            " agent: claude, prompt: hi}\n",
        )
    )
    plain, own = plan.tasks
    assert (plain.agent, plain.model, plain.timeout, plain.max_turns, plain.env) == (
        "scripted",
        "m1",
        60.0,
        3,
        (("A", "x"),),
    )
    assert (own.agent, own.model, own.timeout, own.max_turns, own.env) == (
        "claude",
        "m2",
        120.0,
        4,
        (("B", "y"),),
    )
    assert plain.stall_timeout == Task(id="x").stall_timeout


def test_a_task_without_any_agent_is_a_claude_task(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, "tasks:\n  - id: a\n    prompt: do it\n"))
    assert plan.tasks[0].agent == "claude"
    (error,) = errors_of(write(tmp_path, "tasks:\n  - id: a\n    script: [{say: hi}]\n"))
    assert error.rule == "missing-prompt"
    assert "agent: scripted" in error.hint


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("90s", 90.0),
        ("20m", 1200.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("", None),
        ("20x", None),
        ("-5s", None),
        ("m", None),
        ("1h30", None),
        ("ten seconds", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_workspace_is_relative_to_the_plan_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    body = "tasks:\n  - {id: a, prompt: hi}\n"
    written = write(plans, "workspace: ../work\n" + body)
    monkeypatch.chdir(tmp_path / "plans")
    assert load_plan(written).workspace == tmp_path / "work"
    assert load_plan(write(plans, body, "bare.yaml")).workspace == tmp_path / "plans"
    override = load_plan(written, workspace_override=Path("elsewhere"))
    assert override.workspace == tmp_path / "plans" / "elsewhere"
    assert load_plan(written).source == written


def test_the_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, "tasks:\n  - {id: a, prompt: hi}\n", "add-login.yaml"))
    assert plan.name == "add-login"


def test_yaml_merge_keys_share_settings_kept_under_x_keys(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            "x-common: &common {agent: scripted, script: [{say: shared}], timeout: 30s}\n"
            "tasks:\n"
            "  - {<<: *common, id: a}\n"
            "  - {<<: *common, id: b, timeout: 1m}\n",
        )
    )
    a, b = plan.tasks
    assert (a.id, a.agent, a.script, a.timeout) == ("a", "scripted", (Say("shared"),), 30.0)
    assert (b.id, b.agent, b.script, b.timeout) == ("b", "scripted", (Say("shared"),), 60.0)


def test_values_keep_the_text_they_were_written_with(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            "tasks:\n"
            "  - id: 2024\n"
            "    prompt: yes\n"
            "    model: 4.5\n"
            "  - {id: on, prompt: 2024-01-01, depends_on: [2024]}\n",
        )
    )
    first, second = plan.tasks
    assert (first.id, first.prompt, first.model) == ("2024", "yes", "4.5")
    assert (second.id, second.prompt, second.depends_on) == ("on", "2024-01-01", ("2024",))


def test_a_ten_thousand_task_chain_loads(tmp_path: Path) -> None:
    lines = ["defaults: {agent: scripted}", "tasks:"]
    for i in range(10_000):
        deps = f", depends_on: [t{i - 1}]" if i else ""
        lines.append(f"  - {{id: t{i}, script: [{{say: step {i}}}]{deps}}}")
    plan = load_plan(write(tmp_path, "\n".join(lines) + "\n"))
    assert len(plan.tasks) == 10_000
    assert plan.tasks[-1].depends_on == ("t9998",)
    assert plan.tasks[-1].line == 10_002


def test_a_ten_thousand_task_wide_plan_loads(tmp_path: Path) -> None:
    lines = ["defaults: {agent: scripted}", "tasks:"]
    lines += [f"  - {{id: t{i}, script: [{{say: hi}}]}}" for i in range(10_000)]
    every = ", ".join(f"t{i}" for i in range(10_000))
    lines.append(f"  - {{id: join, script: [{{say: done}}], depends_on: [{every}]}}")
    plan = load_plan(write(tmp_path, "\n".join(lines) + "\n"))
    assert len(plan.tasks) == 10_001
    assert len(plan.tasks[-1].depends_on) == 10_000


def test_a_ten_thousand_task_toml_chain_loads(tmp_path: Path) -> None:
    parts = ['[defaults]\nagent = "scripted"\n']
    for i in range(10_000):
        deps = f'depends_on = ["t{i - 1}"]\n' if i else ""
        parts.append(f'[[tasks]]\nid = "t{i}"\n{deps}script = [{{ say = "step {i}" }}]\n')
    plan = load_plan(write(tmp_path, "\n".join(parts), "chain.toml"))
    assert len(plan.tasks) == 10_000
    assert plan.tasks[1].line == 8


# --- fixer: and defaults: take every key a task takes -------------------------------------------


def test_the_fixer_and_defaults_take_the_keys_a_task_takes(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            "defaults: {agent: claude-code, permission_mode: acceptEdits, budget_usd: 2,"
            " allowed_tools: [Bash], args: [--verbose], env: {A: x}, pass_env: [TOKEN]}\n"
            "fixer:\n"
            "  permission_mode: bypassPermissions\n"
            "  allowed_tools: [Edit, Bash]\n"
            "  args: [--effort, low]\n"
            "  env: {B: y}\n"
            "  pass_env: [OTHER]\n"
            "  budget_usd: 0.5\n"
            "tasks:\n"
            "  - {id: a, prompt: hi, budget_usd: 1.25}\n",
        )
    )
    fixer, (task,) = plan.fixer, plan.tasks
    assert (fixer.permission_mode, fixer.allowed_tools, fixer.args) == (
        "bypassPermissions", ("Edit", "Bash"), ("--effort", "low"),
    )  # fmt: skip
    assert (fixer.env, fixer.pass_env, fixer.budget_usd) == ((("B", "y"),), ("OTHER",), 0.5)
    assert task.budget_usd == 1.25
    base = fixer.base  # where the build's fixer starts from: the defaults
    assert (base.agent, base.permission_mode, base.allowed_tools, base.budget_usd) == (
        "claude-code", "acceptEdits", ("Bash",), 2.0,
    )  # fmt: skip


def test_a_fixer_key_its_agent_ignores_is_an_error_and_left_out_keys_are_none(
    tmp_path: Path,
) -> None:
    errors = errors_of(
        write(
            tmp_path,
            "fixer: {agent: command, command: fix.sh, permission_mode: plan}\n"
            "tasks:\n  - {id: a, prompt: hi, budget_usd: 0}\n",
        )
    )
    assert [(e.rule, e.where.line) for e in errors] == [("not-for-agent", 1), ("bad-value", 3)]
    plan = load_plan(write(tmp_path, "fixer: {agent: claude}\ntasks:\n  - {id: a, prompt: hi}\n"))
    fixer = plan.fixer
    assert (fixer.env, fixer.pass_env, fixer.allowed_tools, fixer.args) == (None,) * 4
    assert (fixer.permission_mode, fixer.budget_usd) == (None, None)
