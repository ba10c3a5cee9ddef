"""An addition request checked like a plan: the rules a written task meets, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.plan.additions import Known, Refusal, task_of_request, template_for
from orchestrator.plan.model import Say, Task

TASKS = {
    "a": Task("a", agent="scripted", script=(Say("hi"),)),
    "b": Task("b", agent="command", command=("echo", "{prompt}"), depends_on=("a",)),
}
DEFAULTS = Task("build", agent="claude")
KNOWN = Known.of(TASKS.values())


@pytest.mark.parametrize(
    ("request_", "rule"),
    [
        ({"id": "n", "prompt": "p", "kind": "claude"}, None),
        ({"id": "n", "prompt": "p", "kind": "command", "depends_on": ["a", "b"]}, None),
        ({"id": "bad id", "prompt": "p"}, "bad-id"),
        ({"id": "REPORT", "prompt": "p"}, "reserved-id"),
        ({"id": "n+2", "prompt": "p"}, "bad-id"),  # '+' joins derived agents' ids
        ({"id": "A", "prompt": "p"}, "duplicate-id"),
        ({"id": "n", "prompt": "p", "depends_on": ["nope"]}, "unknown-dependency"),
        ({"id": "n", "prompt": "p", "depends_on": ["n"]}, "cycle"),
        ({"id": "n", "prompt": "p", "depends_on": "a"}, "wrong-type"),
        ({"id": "n", "prompt": "p", "kind": "robot"}, "unknown-agent"),
        ({"id": "n", "prompt": "", "kind": "claude"}, "missing-prompt"),
        ({"id": "n", "prompt": "p", "colour": "red"}, "unknown-field"),
        ({"id": "n", "prompt": "x" * 40_000, "kind": "claude"}, "bad-prompt"),
    ],
)
def test_an_addition_is_checked_like_a_written_task(
    request_: dict[str, Any], rule: str | None
) -> None:
    template = template_for(request_.get("kind"), None, KNOWN, DEFAULTS)
    got = task_of_request(request_, known=KNOWN, template=template)
    assert (got.rule if isinstance(got, Refusal) else None) == rule, got


def test_an_added_task_takes_what_it_does_not_name_from_its_adder_s_task() -> None:
    got = task_of_request({"id": "n", "prompt": "go"}, known=KNOWN,
                          template=template_for(None, TASKS["b"], KNOWN, DEFAULTS))  # fmt: skip
    assert isinstance(got, Task)
    assert (got.agent, got.command, got.prompt, got.depends_on) == (
        "command",
        ("echo", "{prompt}"),
        "go",
        (),
    )


def test_a_person_s_addition_of_a_kind_the_plan_has_takes_that_task_s_settings() -> None:
    assert template_for("scripted", None, KNOWN, DEFAULTS) is TASKS["a"]
    assert template_for(None, None, KNOWN, DEFAULTS) is TASKS["a"]  # no claude task: the first's
