"""What this machine can do to confine agents, probed once at run start.

bubblewrap must be installed and able to make the namespaces (user namespaces for an
ordinary user; as root they always can); the memory and pids limits need a cgroup we may
create children in. The probe starts one real sandbox, so "can sandbox" is never a guess.
Synchronous: call `probe` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.plan.model import Network
from orchestrator.sandbox.bwrap import INSIDE_VAR
from orchestrator.sandbox.cgroups import CgroupBase, find_cgroups

INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"
_PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Support:
    """The probe's answer: a bubblewrap that works (or why not), and usable cgroups."""

    bwrap: str | None
    problem: str
    """Empty when a sandbox can be made; else why not (one sentence, with a hint)."""
    cgroups: CgroupBase | None
    limits_note: str
    """Empty when memory and pids limits are enforced; else what is not and why."""

    @property
    def can_sandbox(self) -> bool:
        return self.bwrap is not None and not self.problem


def inside_sandbox(env: Mapping[str, str]) -> bool:
    """Whether we run inside the sandbox of an agent (a nested run): the marker is set and
    pid 1 of our PID namespace is bubblewrap (a marker alone could be inherited or forged)."""
    if env.get(INSIDE_VAR) != "1":
        return False
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv0 = f.read(4096).split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"bwrap"


def probe(network: Network = "full") -> Support:
    """Try a sandbox like the ones agents get (with ``--unshare-net`` when the plan wants
    no network or only the gateway), and look for cgroups."""
    cgroups, note = find_cgroups()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Support(None, f"no bwrap on PATH (hint: {INSTALL_HINT})", cgroups, note)
    args = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
    if network != "full":
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    try:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            try:
                code = proc.wait(_PROBE_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return Support(None, "bwrap did not answer within 10 s", cgroups, note)
            err.seek(0)
            said = err.read(500).decode(errors="replace").strip().splitlines()
    except OSError as exc:
        return Support(None, f"cannot run {bwrap}: {exc.strerror or exc}", cgroups, note)
    if code != 0:
        why = said[-1] if said else f"exit code {code}"
        hint = "user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1)"
        return Support(
            None, f"bwrap cannot make a sandbox here: {why} (hint: {hint})", cgroups, note
        )
    return Support(str(Path(bwrap)), "", cgroups, note)
