"""Runs of plans on disk for the isolation tests, and plain git to look at what they left."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from orchestrator.plan.load import load_plan
from orchestrator.records.journal import JournalState, load
from orchestrator.runner import RunOptions, run_plan


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Plain git, to set a repository up or look at it (never while a run is in flight)."""
    return subprocess.check_output(["git", *args], cwd=cwd, text=True, env=env)


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Tester")
    git(path, "config", "user.email", "tester@example.com")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


def write(path: str, content: str) -> dict[str, Any]:
    return {"write": {"path": path, "content": content}}


def task(tid: str, *steps: dict[str, Any], deps: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": tid, "agent": "scripted", "script": list(steps) or [{"say": tid}]}
    if deps:
        out["depends_on"] = list(deps)
    out.update(kw)
    return out


def shell(tid: str, command: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return task(tid, deps=deps, agent="command", command=command, script=None)


def plan_file(where: Path, workspace: Path, tasks: list[dict[str, Any]], **top: Any) -> Path:
    for t in tasks:
        if t.get("script") is None:
            t.pop("script", None)
    doc = {"name": "iso", "workspace": str(workspace), "limits": {"grace": 0.5}, **top}
    doc["tasks"] = tasks
    path = where / "plan.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def run(
    plan: Path, responses: Path, *, deliver: str | None = None, **opts: Any
) -> tuple[int, JournalState]:
    """Run the plan in this process; ``deliver`` as ``run --deliver`` gives it."""
    loaded = load_plan(plan)
    if deliver is not None:
        loaded = replace(loaded, deliver=deliver)  # type: ignore[arg-type]
    code = await run_plan(loaded, RunOptions(responses=responses, json=True, **opts))
    return code, load(responses / ".run" / "journal.jsonl")


def landed_subjects(repo_git_dir_args: list[str], cwd: Path, ref: str) -> list[str]:
    return git(cwd, *repo_git_dir_args, "log", "--format=%s", ref).splitlines()
