"""What a run needs of the machine, checked before anything starts (exit 3 when it lacks it):
the workspace, the nesting depth, the API key, every agent's program, the responses
directory."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.errors import (
    AgentProgramNotFound,
    EnvironmentProblem,
    MissingApiKeyError,
    WorkspaceMissing,
    WorkspaceRefused,
)
from orchestrator.plan.model import PRESETS, Plan, Task
from orchestrator.process.env import child_env
from orchestrator.records.responses import check_responses


def run_depth(env: dict[str, str] | os._Environ[str]) -> int:
    try:
        return max(int(env.get("ORCHESTRATOR_DEPTH", "0")), 0)
    except ValueError:
        return 0


def check_environment(
    plan: Plan, env: dict[str, str] | os._Environ[str], *, responses: Path | None = None
) -> None:
    """Refuse, before anything starts, a run this machine cannot do (exit 3).

    With ``responses``, also a responses directory the run must not write into
    (`check_responses`)."""
    from orchestrator.agents.command import missing_program

    ws = plan.workspace
    missing = not ws.exists() and not ws.is_symlink()
    if missing and not plan.create_workspace:
        where = f" (the plan {plan.source.name} names it)" if plan.source else ""
        raise WorkspaceMissing(
            f"error: workspace {ws} does not exist{where} (hint: check its spelling; "
            "create it, or let the run create it: create_workspace: true in the plan, "
            "or run --create-workspace)"
        )
    create = missing and ws.parent.is_dir()
    if not create and not ws.is_dir():
        raise WorkspaceRefused(f"error: workspace {ws} is not a directory")
    depth = run_depth(env)
    ceiling = plan.limits.max_depth
    if "ORCHESTRATOR_MAX_DEPTH" in env:
        try:
            ceiling = min(ceiling, int(env["ORCHESTRATOR_MAX_DEPTH"]))
        except ValueError:
            pass
    if depth > ceiling:
        raise EnvironmentProblem(
            f"error: nested orchestrator at depth {depth} is past max_depth={ceiling}; not starting"
        )
    kinds = {t.agent for t in plan.tasks} | ({plan.fixer.agent} if plan.fixer.agent else set())
    if "claude" in kinds and not env.get("ANTHROPIC_API_KEY"):
        raise MissingApiKeyError(
            "error: the plan has claude agents but ANTHROPIC_API_KEY is not set "
            "(hint: export it, or use agent: scripted for an offline run)"
        )
    for task in plan.tasks:
        unset = [name for name in task.secrets if not env.get(name)]
        if unset:
            raise EnvironmentProblem(
                f"error: task {task.id} declares secrets: {', '.join(unset)} and the "
                f"environment does not set {'it' if len(unset) == 1 else 'them'} (hint: export "
                "them before the run; nothing was started)"
            )
    child_path = child_env(agent_id="check", run_id="check", depth=0, source=env)["PATH"]
    for task in plan.tasks:
        if task.agent == "command":
            program = missing_program(task, path=child_path, workspace=plan.workspace)
            if program is not None:
                raise AgentProgramNotFound(program, task.id)
    fixer = plan.fixer
    checks = [t for t in plan.tasks if t.agent in PRESETS]
    if fixer.agent in PRESETS:
        checks.append(Task("fixer", agent=fixer.agent))
    for task in checks:
        from orchestrator.agents.presets.program import missing_preset_program

        problem = missing_preset_program(
            task, presets=plan.presets, path=child_path, workspace=plan.workspace
        )
        if problem is not None:
            raise AgentProgramNotFound(problem[0], task.id, problem[1])
    if responses is not None:
        check_responses(responses, ws)
    if create:  # last, so a refused run leaves nothing behind
        try:
            ws.mkdir(exist_ok=True)  # a new workspace; its parent must exist (typos stay errors)
        except OSError as exc:
            raise WorkspaceRefused(f"error: cannot create workspace {ws}: {exc.strerror}") from exc
        if not ws.is_dir():  # a file appeared in its place meanwhile
            raise WorkspaceRefused(f"error: workspace {ws} is not a directory")
