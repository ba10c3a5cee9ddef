"""One exception tree for the whole program, split by who is at fault.

::

    OrchestratorError                 exit_code  who must act
    ├── UsageError                        2      the user: a command line or a plan is wrong
    │   ├── PlanError                     2        one problem in a plan file (where, rule, hint)
    │   ├── PlanErrors                    2        every problem found in one plan file
    │   └── UnknownAgentError             2        a command named an agent the run never had
    ├── EnvironmentProblem                3      the machine: found before anything starts
    │   ├── MissingApiKeyError            3        claude agents but no ANTHROPIC_API_KEY
    │   ├── AgentProgramNotFound          3        a command or preset names a program not on PATH
    │   ├── WorkspaceRefused              3        the workspace is missing or not a directory
    │   └── RunDirRefused                 3        the responses directory or a file of its .run/
    │                                                is unusable: a link, a FIFO, another user's,
    │                                                someone else's files, a full disk at start
    ├── RunLockedError                   75      another orchestrator owns the responses directory
    └── RunError                          1      run time: the orchestrator itself could not go on
        │                                          (e.g. its control socket did not answer)
        └── StorageFailed                 1        a write failed mid-run (a full disk, a file-size
                                                   limit): the run was stopped, its journal says
                                                   interrupted, ``--resume`` continues it

The CLI catches the root, prints ``str(error)`` as one line on stderr and exits with
``error.exit_code``. Nothing below the CLI prints or exits. An agent's own failure is not an
exception: it is an event (`events.Failed`, `Blocked`) that the scheduler turns into a state.
"""

from __future__ import annotations

from dataclasses import dataclass


class OrchestratorError(Exception):
    """Root of every error the program raises on purpose."""

    exit_code: int = 1


class UsageError(OrchestratorError):
    """The user's input (command line or plan) is wrong; nothing was started."""

    exit_code = 2


@dataclass(frozen=True)
class Location:
    """Where in a plan file a problem sits; line and column count from 1."""

    path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{self.col or 1}"


class PlanError(UsageError):
    """One problem in a plan file, with where it is, which rule it breaks and a hint."""

    def __init__(self, where: Location, rule: str, message: str, hint: str = "") -> None:
        self.where = where
        self.rule = rule
        self.message = message
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: error: {self.message} [{self.rule}]"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def as_json(self) -> dict[str, object]:
        """The fields of `validate --json` (docs/commands.md)."""
        return {
            "file": self.where.path, "line": self.where.line or None,
            "col": (self.where.col or 1) if self.where.line > 0 else None,
            "rule": self.rule, "message": self.message, "hint": self.hint or None,
        }  # fmt: skip


class PlanErrors(UsageError):
    """Every problem found in one plan file; ``str`` gives one line per problem."""

    def __init__(self, errors: list[PlanError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(e.render() for e in self.errors))

    def as_json(self) -> list[dict[str, object]]:
        return [e.as_json() for e in self.errors]


class WorkspaceMissing(UsageError):
    """The plan's workspace does not exist and nothing asked to create it."""


class UnknownAgentError(UsageError):
    """A command named an agent that the run does not know."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"error: unknown agent {agent_id!r}")


class EnvironmentProblem(OrchestratorError):
    """The machine is not ready for this plan; found before any agent starts."""

    exit_code = 3


class MissingApiKeyError(EnvironmentProblem):
    """Claude agents need ANTHROPIC_API_KEY."""


class AgentProgramNotFound(EnvironmentProblem):
    """A command agent or preset names a program that is not installed."""

    def __init__(self, program: str, task_id: str, install_hint: str = "") -> None:
        self.program = program
        self.task_id = task_id
        msg = f"error: task {task_id!r} needs program {program!r}, which is not on PATH"
        if install_hint:
            msg += f" (hint: {install_hint})"
        super().__init__(msg)


class WorkspaceRefused(EnvironmentProblem):
    """The workspace directory is missing or unusable."""


class RunDirRefused(EnvironmentProblem):
    """The responses directory, or a file in it the run needs, cannot be used safely."""


class RunLockedError(OrchestratorError):
    """Another orchestrator holds the lock on this responses directory."""

    exit_code = 75

    def __init__(self, responses: str, pid: int | None) -> None:
        self.responses = responses
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"error: {responses} is in use by a running orchestrator ({holder})")


class RunError(OrchestratorError):
    """Something failed at run time."""

    exit_code = 1


class StorageFailed(RunError):
    """A write of the run's records failed mid-run; the run was stopped cleanly."""
