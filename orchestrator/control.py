"""The control channel: a Unix socket under ``.run/`` through which `cancel` reaches a live run.

One JSON request per connection, one JSON answer. The server lives in the orchestrator's
event loop and answers from the scheduler's in-memory state, so it stays quick while agents
flood output. The client side is plain blocking sockets: it runs in short-lived CLI commands,
never inside the event loop.

When no orchestrator answers, `stop_recorded` stops what the journal says is still running
itself, checking each process's start time so a recycled pid is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import procs
from orchestrator.errors import OrchestratorError, UnknownAgentError
from orchestrator.journal import JournalState

if TYPE_CHECKING:
    from orchestrator.scheduler import Run

MAX_REQUEST = 64 * 1024


def handle(run: Run, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request against the live run (sync: the scheduler's API is sync here)."""
    op = request.get("op")
    force = bool(request.get("force"))
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    if op == "cancel_all":
        run.cancel_all(reason="cancel --all", force=force)
        return {"ok": True}
    if op == "cancel":
        agents = request.get("agents")
        if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
            return {"ok": False, "code": 2, "error": "error: cancel needs a list of agent ids"}
        stopped: list[str] = []
        try:
            for agent_id in agents:
                run.peek(agent_id)  # unknown ids fail before anything is stopped
            for agent_id in agents:
                stopped += run.cancel(agent_id, tree=bool(request.get("tree")), force=force)
        except UnknownAgentError as exc:
            return {"ok": False, "code": exc.exit_code, "error": str(exc)}
        return {"ok": True, "stopped": stopped}
    return {"ok": False, "code": 2, "error": f"error: unknown control op {op!r}"}


@contextlib.asynccontextmanager
async def open_control_server(run: Run, path: Path) -> AsyncIterator[None]:
    """Serve the control socket at ``path`` for as long as the block runs."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line[:MAX_REQUEST])
                answer = handle(run, request) if isinstance(request, dict) else None
            except ValueError:
                answer = None
            if answer is None:
                answer = {"ok": False, "code": 2, "error": "error: bad control request"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_REQUEST)
    os.chmod(path, 0o600)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def request(path: Path, payload: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any] | None:
    """Send one request; None when no orchestrator listens there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except OSError as exc:
        raise OrchestratorError(f"error: the control socket did not answer: {exc}") from exc
    answer = json.loads(data) if data else None
    return answer if isinstance(answer, dict) else None


def _alive_as_recorded(pid: int, pstart: object) -> bool:
    """True when ``pid`` is still the very process the journal recorded (not a recycled pid)."""
    return isinstance(pstart, int) and procs.process_start_time(pid) == pstart


def stop_recorded(journal: JournalState, agent_ids: list[str] | None, *, grace: float) -> list[str]:
    """Stop, without an orchestrator, the process groups the journal records as running.

    Blocking (SIGTERM, up to ``grace`` seconds, SIGKILL); for CLI use only. With no ids, every
    running agent is stopped and every process marked with the run's id is swept.
    """
    targets = []
    for agent_id, rec in journal.agents.items():
        if agent_ids is not None and agent_id not in agent_ids:
            continue
        pid = rec.get("pgid") or rec.get("pid")
        if rec.get("state") == "running" and isinstance(pid, int):
            if _alive_as_recorded(pid, rec.get("pstart")):
                targets.append((agent_id, pid))
    for _, pgid in targets:
        procs.kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while targets and time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{pgid}") and _is_running(pgid) for _, pgid in targets):
            break
        time.sleep(0.02)  # noqa: TID251 - a short-lived CLI process, not event-loop code
    for _, pgid in targets:
        procs.kill_group(pgid, signal.SIGKILL)
    run_id = journal.run.get("run_id")
    if agent_ids is None and isinstance(run_id, str) and run_id:
        procs.sweep_run(run_id)
    return [agent_id for agent_id, _ in targets]


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False
