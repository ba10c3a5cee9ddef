"""Syntax errors in plan files name the likely cause where it is a common one."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import PlanErrors
from orchestrator.plan.load import load_plan

CASES = [
    ("p.yaml", "name: x\ntasks:\n\t- id: a\n", 3, "never tabs"),
    ("p.yaml", "name: x\ntasks:\n  - id: a\n    prompt: Fix: the bug\n", 4, "must be quoted"),
    ("p.yaml", 'name: "x\ntasks: []\n', None, "not closed"),
    ("p.yaml", "name: x\n  tasks: []\n", 2, "indented more"),
    ("p.toml", 'name = "x\n', 1, "not closed"),
    ("p.toml", "name = x\n", 1, "need quotes"),
]


@pytest.mark.parametrize(("name", "text", "line", "hint"), CASES)
def test_a_common_syntax_error_gets_a_hint(
    tmp_path: Path, name: str, text: str, line: int | None, hint: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PlanErrors) as caught:
        load_plan(path)
    [err] = caught.value.errors
    assert err.rule == "syntax"
    assert hint in err.hint
    if line is not None:
        assert err.where.line == line
    assert f"{path}:" in str(err)
