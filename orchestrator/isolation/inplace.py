"""``isolation: none``: every agent works in the workspace itself, as it always did (the
same seam as `orchestrator.isolation.checkouts.Checkouts`, with nothing to seal or land)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.isolation.checkouts import HandBack, Place


class InPlace:
    """Leases the workspace to every agent; warns once when two writers overlap in it."""

    def __init__(self, workspace: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.workspace = workspace
        self._warn = warn
        self._writers: set[str] = set()
        self._warned = False

    async def lease(self, agent_id: str, role: str, task_id: str) -> Place:
        if role != "build" and self._warn is not None and not self._warned:
            if self._writers:
                self._warned = True
                self._warn(
                    f"warning: isolation is none and {agent_id} writes in {self.workspace} while "
                    f"{', '.join(sorted(self._writers))} still run: their edits can overwrite "
                    "each other (hint: drop isolation: none)"
                )
                self._writers = set()  # said once: 10,000 agents at once need no set of names
            else:
                self._writers.add(agent_id)
        return Place(self.workspace, agent_id, task_id, role)

    async def hand_back(
        self, place: Place, state: str, reason: str, *, summary: str, kind: str, prompt: str
    ) -> HandBack:
        self._writers.discard(place.agent_id)
        return HandBack(state, reason)
