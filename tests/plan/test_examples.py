"""The example plans and the hints they carry say what works."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.agents.presets.table import BUILTIN
from orchestrator.plan.load import load_plan

PLANS = Path(__file__).resolve().parents[2] / "plans"


def test_the_commented_presets_example_validates_when_uncommented(tmp_path: Path) -> None:
    text = (PLANS / "claude-code-example.yaml").read_text()
    head, _, tail = text.partition("# presets:")
    assert tail, "the example has a commented presets: section"
    uncommented = "presets:" + re.sub(r"(?m)^# ?", "", tail)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(head + uncommented)
    plan = load_plan(plan_file)
    assert {name for name, _ in plan.presets} == {"claude-code", "codex", "aider"}


def test_no_hint_names_a_package_index_project_that_is_not_this_one() -> None:
    # "orchestrator" on the package index is an unrelated project.
    hints = [p.install_hint for p in BUILTIN.values()]
    hints.append((PLANS / "claude-code-example.yaml").read_text())
    for hint in hints:
        assert "orchestrator[" not in hint
    assert "pip install claude-agent-sdk" in BUILTIN["claude-code"].install_hint
    assert "'.[claude-code]'" in BUILTIN["claude-code"].install_hint
