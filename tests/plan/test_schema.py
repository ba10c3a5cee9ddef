"""The JSON Schema of plan files is made from the loader's field tables and agrees with it:
every example plan and the starter pass both; plans with unknown keys or wrong types fail both."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import PlanErrors
from orchestrator.plan.load import TOP_KEYS, load_plan
from orchestrator.plan.schema import plan_schema
from orchestrator.plan.sections import BUILD_KEYS, FIXER_KEYS, LIMIT_KEYS
from orchestrator.plan.taskfields import DEFAULT_KEYS
from orchestrator.plan.tasks import TASK_KEYS

ROOT = Path(__file__).resolve().parents[2]
PLANS = sorted((ROOT / "plans").glob("*.*"))
STARTER = ROOT / "orchestrator" / "plan" / "starter.yaml"


def data_of(path: Path) -> Any:
    text = path.read_text()
    return tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)


def test_every_section_lists_exactly_the_keys_its_loader_takes() -> None:
    schema = plan_schema()
    defs = schema["$defs"]
    assert set(schema["properties"]) == set(TOP_KEYS)
    for name, keys in [("task", TASK_KEYS), ("defaults", DEFAULT_KEYS), ("limits", LIMIT_KEYS),
                       ("build", BUILD_KEYS), ("fixer", FIXER_KEYS)]:  # fmt: skip
        assert set(defs[name]["properties"]) == set(keys), name
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", [*PLANS, STARTER], ids=lambda p: p.name)
def test_the_example_plans_and_the_starter_pass_the_schema_and_the_loader(path: Path) -> None:
    jsonschema.validate(data_of(path), plan_schema())
    load_plan(path)


@pytest.mark.parametrize(
    "plan",
    [
        {"name": "x", "tasks": [{"id": "a", "agent": "scripted", "script": [{"say": "hi"}],
                                  "colour": "red"}]},
        {"name": "x", "tasks": [{"id": "a", "agent": "robot", "prompt": "p"}]},
        {"name": "x", "limits": {"max_agents": 0}, "tasks": [{"id": "a", "agent": "scripted",
                                                               "script": [{"say": "x"}]}]},
        {"name": "x", "tasks": [{"id": "a", "agent": "scripted", "script": [{"dance": "x"}]}]},
    ],
    ids=["unknown-key", "unknown-agent", "limit-out-of-range", "unknown-step"],
)  # fmt: skip
def test_what_the_loader_refuses_the_schema_refuses(plan: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(plan, plan_schema())
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(PlanErrors):
        load_plan(path)


def test_schema_prints_it_and_init_writes_a_plan_that_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == plan_schema()
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 0
    assert load_plan(tmp_path / "plan.yaml").name == "starter"
    written = json.loads((tmp_path / "plan.schema.json").read_text())
    assert written == plan_schema()
    again = runner.invoke(app, ["init", str(tmp_path)])
    assert again.exit_code == 2
    assert "exists" in again.stderr
    assert runner.invoke(app, ["init", str(tmp_path), "--force"]).exit_code == 0
    assert runner.invoke(app, ["init", str(tmp_path / "missing")]).exit_code == 2
