"""Per-agent memory and pids limits through cgroups (v1 or v2), where the machine lets us.

`find_cgroups` looks once, at run start, for cgroup directories under our own cgroup that we
may create children in (cgroup v1: the ``memory`` and ``pids`` hierarchies; v2: the unified
one with both controllers delegated). `open_agent` makes one directory per agent with its
limits written, and gives the ``cgroup.procs`` files the spawn joins *before* it execs the
sandbox, so every process of the agent is counted from its first fork. All synchronous
(a mkdir and a few small writes on cgroupfs, ~0.1 ms): `find_cgroups` runs in a thread.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
_PREFIX = "orchestrator-"
_names = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CgroupBase:
    """Where agents' cgroups are made: a directory per controller (the same one on v2)."""

    version: int
    memory: Path | None
    pids: Path | None
    swap: bool = True
    """Whether swap is limited with memory (v1 needs the kernel's swap accounting: ``memsw``)."""


@dataclass(frozen=True, slots=True)
class AgentCgroup:
    """One agent's cgroup directories; its processes join through `procs`."""

    dirs: tuple[Path, ...]

    @property
    def procs(self) -> tuple[Path, ...]:
        return tuple(d / "cgroup.procs" for d in self.dirs)

    def remove(self) -> None:
        """Remove the directories (the agent's processes are gone); a busy one is left."""
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass


def own_paths(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path (``""`` is the v2 hierarchy)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def find_cgroups(root: Path = ROOT) -> tuple[CgroupBase | None, str]:
    """Where per-agent cgroups can be made, and a sentence saying what is not enforced."""
    try:
        mine = own_paths(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return None, f"no cgroups here ({exc.strerror})"
    if (root / "cgroup.controllers").exists():
        return _unified(root, mine.get("", "/"))
    memory = _usable(root / "memory", mine.get("memory"))
    pids = _usable(root / "pids", mine.get("pids"))
    missing = [name for name, d in (("memory", memory), ("pids", pids)) if d is None]
    note = f"cgroup v1 {' and '.join(missing)} controller not writable: not enforced"
    if memory is None and pids is None:
        return None, note
    swap = memory is None or (memory / "memory.memsw.limit_in_bytes").exists()
    notes = [note] if missing else []
    if not swap:
        notes.append(
            "cgroup v1 without swap accounting (no memory.memsw; kernel option swapaccount=1): "
            "swap is not limited, an agent may swap past limits.memory"
        )
    return CgroupBase(1, memory, pids, swap), "; ".join(notes)


def _unified(root: Path, own: str) -> tuple[CgroupBase | None, str]:
    base = root / own.lstrip("/")
    try:
        wanted = {"memory", "pids"}
        have = set((base / "cgroup.subtree_control").read_text().split())
        if not wanted <= have:
            (base / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError as exc:
        why = exc.strerror or str(exc)
        return None, f"cgroup v2: cannot delegate memory and pids under {base} ({why})"
    usable = _usable(root, own)
    if usable is None:
        return None, f"cgroup v2: {base} is not writable"
    return CgroupBase(2, usable, usable), ""


def _usable(hierarchy: Path, own: str | None) -> Path | None:
    """``hierarchy``/``own`` when we can make (and remove) a directory in it."""
    if own is None or not hierarchy.is_dir():
        return None
    base = hierarchy / own.lstrip("/")
    _prune(base)
    probe = base / f"{_PREFIX}{os.getpid()}-probe"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return None
    return base


def _prune(base: Path) -> None:
    """Remove the empty cgroups that orchestrators no longer alive left (a SIGKILLed run)."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for d in entries:
        pid = d.name[len(_PREFIX) :].split("-")[0] if d.name.startswith(_PREFIX) else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                d.rmdir()
            except OSError:
                pass


def open_agent(base: CgroupBase, *, memory: int | None, pids: int | None) -> AgentCgroup:
    """A fresh cgroup for one agent with its limits written. OSError when it cannot be made:
    a limit the plan asked for that cannot be set must stop the spawn, not be skipped."""
    name = f"{_PREFIX}{os.getpid()}-{next(_names)}"
    dirs: list[Path] = []
    try:
        if memory is not None and base.memory is not None:
            d = base.memory / name
            d.mkdir()
            dirs.append(d)
            if base.version == 2:
                _write(d, "memory.max", memory)
                _write(d, "memory.swap.max", 0, optional=True)
            else:
                _write(d, "memory.limit_in_bytes", memory)
                if base.swap:  # memory + swap: the same figure, so no swap past the limit
                    _write(d, "memory.memsw.limit_in_bytes", memory)
        if pids is not None and base.pids is not None:
            d = base.pids / name
            if d not in dirs:
                d.mkdir()
                dirs.append(d)
            _write(d, "pids.max", pids)
    except BaseException:
        AgentCgroup(tuple(dirs)).remove()
        raise
    return AgentCgroup(tuple(dirs))


def _write(d: Path, name: str, value: int, *, optional: bool = False) -> None:
    try:
        (d / name).write_text(str(value))
    except FileNotFoundError:
        if not optional:
            raise
