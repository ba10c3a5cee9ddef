"""Path and read attacks, as one shell script an agent (or a ``run_command``) runs.

Each attack prints ``HELD <name>`` when it worked and ``REFUSED <name>`` when it did not,
so a test counts both and names every one that held.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

CANARY_KEY = "sk-ant-canary-0123456789abcdef"
SECRET = "canary-ssh-private-key"


@dataclass(frozen=True)
class Scene:
    """Where the attacks aim: a workspace that is a git repository with a submodule's git
    directory, the run directory, a home with secrets, and a file outside everything."""

    workspace: Path
    run_dir: Path
    home: Path
    outside: Path

    @classmethod
    def make(
        cls, base: Path, *, workspace: Path | None = None, run_dir: Path | None = None
    ) -> Scene:
        ws = workspace or base / "ws"
        ws.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(ws)], check=True)  # noqa: TID251 - test setup
        sub = ws / ".git" / "modules" / "sub"
        (sub / "hooks").mkdir(parents=True)
        (sub / "HEAD").write_text("ref: refs/heads/main\n")
        (sub / "config").write_text("[core]\n")
        home = base / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "id_ed25519").write_text(SECRET)
        (home / ".netrc").write_text(SECRET)
        rd = run_dir or base / "agent-responses"
        if run_dir is None:  # a run makes its own (and refuses files it did not write)
            rd.mkdir()
            (rd / "a.md").write_text("# a\n")
        outside = base / "outside.txt"
        outside.write_text("untouched\n")
        return cls(ws, rd, home, outside)


HOST_TARGETS = frozenset({"write-tmp", "write-etc", "remount-rw"})
"""Attacks aimed at the machine itself, outside the test's directory: left out of a run
that is not confined (the control), where they would succeed."""


def attack_script(scene: Scene, pid: str, *, confined: bool = True) -> str:
    """The corpus of attacks, for ``/bin/sh -c``; ``pid`` is a shell word that gives the
    pid of the process holding the key (a number, or ``$(...)``). Unconfined, the attacks
    on the machine itself (`HOST_TARGETS`) are left out."""
    q = shlex.quote
    ws, rd, home = scene.workspace, scene.run_dir, scene.home
    writes = {
        "write-outside": f"echo owned > {q(str(scene.outside))}",
        "write-beside-workspace": f"echo owned > {q(str(ws.parent / 'beside.txt'))}",
        "write-tmp": "echo owned > /tmp/sandbox-attack-$$",
        "write-etc": "echo owned > /etc/sandbox-attack",
        "write-home": f"echo owned > {q(str(home / 'owned'))}",
        "write-hook": f"echo 'echo owned' > {q(str(ws / '.git/hooks/pre-commit'))}",
        "write-git-config": f"echo '[core] hooksPath = /tmp' >> {q(str(ws / '.git/config'))}",
        "write-submodule-hook": f"echo x > {q(str(ws / '.git/modules/sub/hooks/post-checkout'))}",
        "write-run-dir": f"echo 'status: FORGED' >> {q(str(rd / 'a.md'))}",
        "remount-rw": "mount -o remount,rw / 2>/dev/null",
    }
    reads = {
        "read-ssh-key": f"grep -q {SECRET} {q(str(home / '.ssh/id_ed25519'))}",
        "read-netrc": f"grep -q {SECRET} {q(str(home / '.netrc'))}",
        "read-environ": f"cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q {CANARY_KEY}",
        "read-holder-environ": f"tr '\\0' '\\n' < /proc/$pid/environ | grep -q {CANARY_KEY}",
        "read-holder-mem": "head -c 1 /proc/$pid/mem >/dev/null",
        "see-holder": "ls /proc | grep -qx $pid",
        "signal-holder": "kill -0 $pid 2>/dev/null",
    }
    lines = [f"pid={pid}"]
    lines += [
        f"if ( {cmd} ) 2>/dev/null; then echo HELD {name}; else echo REFUSED {name}; fi"
        for name, cmd in {**writes, **reads}.items()
        if confined or name not in HOST_TARGETS
    ]
    lines.append("echo inside > inside.txt && echo WROTE-WORKSPACE")
    return "\n".join(lines)


ATTACKS = 17
"""How many attacks `attack_script` tries."""


def outcome(lines: list[str]) -> tuple[list[str], list[str]]:
    """(held, refused) attack names from the script's output."""
    held = [line.split()[1] for line in lines if line.startswith("HELD ")]
    refused = [line.split()[1] for line in lines if line.startswith("REFUSED ")]
    return held, refused


def untouched(scene: Scene) -> list[str]:
    """The targets that changed on disk (none should)."""
    changed = []
    if scene.outside.read_text() != "untouched\n":
        changed.append("outside")
    for path in (
        scene.workspace.parent / "beside.txt",
        scene.home / "owned",
        scene.workspace / ".git/hooks/pre-commit",
        scene.workspace / ".git/modules/sub/hooks/post-checkout",
    ):
        if path.exists():
            changed.append(str(path))
    if "hooksPath" in (scene.workspace / ".git/config").read_text():
        changed.append(".git/config")
    if "status: FORGED" in (scene.run_dir / "a.md").read_text().splitlines():
        changed.append("run dir")
    return changed
