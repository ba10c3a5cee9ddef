"""The run's confinement policy, built once from the plan, the run directory and the machine.

A `Confinement` is what every sandboxed spawn of the run shares: the network, the limits,
the paths that stay read-only inside a writable tree (the run directory), the extra writable
paths the plan names, the home secrets that are hidden, and where private temp directories
and cgroups are made. The workspace is not part of it: each spawn's working directory is
what it may write (an attempt's own checkout as well as the plan's workspace).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.plan.model import Network, Plan
from orchestrator.sandbox.cgroups import CgroupBase
from orchestrator.sandbox.scratch import SpareTmps

HOME_SECRETS: tuple[str, ...] = (
    ".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".netrc", ".git-credentials",
    ".config/gh", ".config/gcloud", ".config/anthropic", ".anthropic", ".npmrc", ".pypirc",
    ".password-store", ".bash_history", ".zsh_history", ".python_history", ".vault-token",
)  # fmt: skip
"""Relative to the home directory: hidden inside the sandbox unless the plan lists them
under ``sandbox: readable``."""


@dataclass(frozen=True, slots=True)
class Confinement:
    """What every sandboxed process of a run gets (see the module docstring)."""

    bwrap: str
    """The bubblewrap binary."""
    scratch: Path
    """Where each spawn's private temp directory is made (removed after the spawn, or kept
    empty for the next one in `spares`)."""
    network: Network = "full"
    memory: int | None = None
    """Bytes per agent; None: not enforced (no usable memory cgroup)."""
    pids: int | None = None
    """Processes per agent; None: not enforced (no usable pids cgroup)."""
    cgroups: CgroupBase | None = None
    writable: tuple[Path, ...] = ()
    protected: tuple[Path, ...] = ()
    """Read-only even where they lie inside a writable path (the run directory)."""
    hidden: tuple[Path, ...] = ()
    """Home secrets: empty and read-only inside."""
    spares: SpareTmps = dataclasses.field(default_factory=SpareTmps, compare=False, repr=False)
    """The run's empty temp directories kept for its next spawns (shared by the copies that
    `widened` and `through_gateway` make)."""
    gateway_port: int | None = None
    """With ``network: gateway``, the port of the run's gateway that an attempt was given:
    inside, ``127.0.0.1:<port>`` is relayed to `gateway_socket` (`orchestrator.sandbox.forward`).
    None: no gateway for it, no network at all."""

    @property
    def gateway_socket(self) -> Path:
        """Where the run's gateway also listens (a Unix socket) for sandboxes without network."""
        return self.scratch / "gateway.sock"

    def widened(self, *writable: Path) -> Confinement:
        """The same confinement with more writable paths (a preset's own config directory)."""
        return dataclasses.replace(self, writable=self.writable + tuple(writable))

    def through_gateway(self, url: str | None) -> Confinement:
        """For an attempt given the gateway at ``url``: with ``network: gateway`` its
        sandbox reaches that URL's port on its own loopback; otherwise unchanged."""
        if self.network != "gateway" or not url:
            return self
        port = urlsplit(url).port
        if port is None:
            return self
        return dataclasses.replace(self, gateway_port=port)


def home_secrets(home: Path, readable: tuple[Path, ...]) -> tuple[Path, ...]:
    """The secrets under ``home`` that exist, less those the plan lets agents read.

    Synchronous (a few ``lstat`` calls): call it at run start, off the event loop."""
    found = []
    for name in HOME_SECRETS:
        path = home / name
        if path in readable or any(r in path.parents for r in readable):
            continue
        if os.path.lexists(path) and not os.path.islink(path):
            found.append(path)
    return tuple(found)


def plan_confinement(
    plan: Plan,
    *,
    bwrap: str,
    scratch: Path,
    run_dir: Path,
    cgroups: CgroupBase | None,
    home: Path,
) -> Confinement:
    """The run's confinement: the plan's wishes, limited to what ``cgroups`` can enforce.

    ``run_dir`` (the responses directory: progress files, journal, control socket) stays
    read-only even when it lies inside the workspace. Synchronous: see `home_secrets`.
    """
    spec = plan.sandbox
    return Confinement(
        bwrap=bwrap,
        scratch=scratch,
        network=spec.network,
        memory=plan.limits.memory if cgroups is not None and cgroups.memory else None,
        pids=plan.limits.pids if cgroups is not None and cgroups.pids else None,
        cgroups=cgroups,
        writable=spec.writable,
        protected=(run_dir,),
        hidden=home_secrets(home, spec.readable),
    )
