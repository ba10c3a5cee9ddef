"""Whether a run's agents are confined, decided before it starts from the plan and the probe.

``sandbox: required`` (the default for plans with agents that use a model) refuses a run the
machine cannot confine (exit 3, nothing started); ``best-effort`` runs it unconfined with a
warning that `status` and REPORT.md repeat; ``off`` runs it unconfined on purpose. Limits that
cannot be enforced (no usable cgroup) are warnings in every mode. ``network: none`` and
``gateway`` give each sandbox a network namespace of its own (only loopback); with
``gateway`` an attempt that holds a gateway token reaches the run's gateway on its own
127.0.0.1 through a relay (`orchestrator.sandbox.forward`), and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import EnvironmentProblem
from orchestrator.plan.model import Network, Plan
from orchestrator.sandbox.confinement import Confinement, plan_confinement
from orchestrator.sandbox.scratch import default_scratch
from orchestrator.sandbox.support import Support


@dataclass(frozen=True, slots=True)
class SandboxDecision:
    """The run's confinement (None: unconfined) and what it must tell the user."""

    mode: str
    confinement: Confinement | None
    warnings: tuple[str, ...] = ()
    nested: bool = False
    """Started by a confined agent: the sandbox of that agent holds this whole run."""

    @property
    def summary(self) -> str:
        """One line for `validate`, the journal, `status` and REPORT.md."""
        if self.nested:
            return f"{self.mode}: inside the sandbox of the agent that started this run"
        if self.confinement is None:
            return f"{self.mode}: agents run unconfined"
        c = self.confinement
        limits = [
            f"memory {c.memory // 2**20} MiB" if c.memory is not None else "memory unlimited",
            f"pids {c.pids}" if c.pids is not None else "pids unlimited",
        ]
        return (
            f"{self.mode}: bwrap (pid, mount, ipc namespaces; network {c.network}; "
            f"{', '.join(limits)})"
        )


def decide(
    plan: Plan,
    support: Support,
    *,
    responses: Path,
    scratch: Path | None = None,
    home: Path | None = None,
) -> SandboxDecision:
    """Confine the run as the plan asks and the machine allows, or refuse it.

    Raises `EnvironmentProblem` for ``sandbox: required`` on a machine that cannot make a
    sandbox. Synchronous (a few ``stat`` calls): call it before the event loop, or in a thread.
    """
    mode = plan.sandbox_mode
    if mode == "off":
        return SandboxDecision(mode, None)
    if not support.can_sandbox or support.bwrap is None:
        if mode == "required":
            raise EnvironmentProblem(
                f"error: the plan needs a sandbox (sandbox: required) and this machine cannot "
                f"make one: {support.problem}; nothing was started (or write sandbox: "
                f"best-effort in the plan to run unconfined with a warning)"
            )
        return SandboxDecision(mode, None, (f"no sandbox: {support.problem}",))
    warnings = []
    if support.limits_note:
        warnings.append(f"limits: {support.limits_note}")
    conf = plan_confinement(
        plan,
        bwrap=support.bwrap,
        scratch=scratch or default_scratch(),
        run_dir=Path(os.path.abspath(responses)),
        cgroups=support.cgroups,
        home=home or Path(os.path.expanduser("~")),
    )
    return SandboxDecision(mode, conf, tuple(warnings))


def check(plan: Plan, *, responses: Path) -> SandboxDecision:
    """Probe the machine and decide (`decide`); synchronous, for the CLI before its loop.

    A run started by a confined agent (a nested run) is held by that agent's sandbox: its
    namespaces, mount view and limits bind everything the nested run starts, and a sandbox
    cannot be made inside it (capabilities are dropped there)."""
    from orchestrator.sandbox.support import inside_sandbox, probe

    if plan.sandbox_mode != "off" and inside_sandbox(os.environ):
        return SandboxDecision(plan.sandbox_mode, None, nested=True)
    network: Network = "full" if plan.sandbox.network == "full" else "none"
    return decide(plan, probe(network), responses=responses)
