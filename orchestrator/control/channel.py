"""The control channel: a Unix socket under ``.run/`` through which `cancel` reaches a live run.

One JSON request per connection, one JSON answer. ``add`` (a task added to the running plan,
`orchestrator.engine.growth`) is answered for the process that connected: its peer
credentials say which agent, if any, asks. A request is at most `MAX_REQUEST` bytes
and of one fixed shape (an object of strings, booleans and a list of ids, so its depth is
bounded too); anything else is answered with an error, never a traceback. The socket is used
only when it is a socket of this user, never through a link. The server lives in the orchestrator's
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
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.engine import growth
from orchestrator.errors import RunError, UnknownAgentError
from orchestrator.records.rundir import RunDir, check_entry, is_locked

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run

MAX_REQUEST = 64 * 1024
MAX_AGENTS = 10_000
"""Agent ids one cancel request may name."""
_OPS = {
    "ping": (),
    "cancel_all": ("force", "tree"),
    "cancel": ("agents", "tree", "force", "after_turn"),
    "add": ("id", "prompt", "kind", "depends_on"),
}


def handle(run: Run, request: dict[str, Any], *, peer: int | None = None) -> dict[str, Any]:
    """Answer one request against the live run (sync: the scheduler's API is sync here);
    ``peer`` is the pid of the process that sent it."""
    op = request.get("op")
    force = bool(request.get("force"))
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    if op == "add":
        adder = growth.adder_of(run, peer, own_pid=os.getpid())
        if isinstance(adder, growth.NotAnAgent):
            why = "this process belongs to no running agent of the run (it left its agent)"
            return {"ok": False, "refused": {"rule": "not-an-agent", "message": why, "hint": ""}}
        fields = {k: v for k, v in request.items() if k != "op"}
        return growth.answer(run, fields, adder=adder)
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
                if request.get("after_turn"):
                    stopped += run.cancel_after_turn(agent_id)
                else:
                    stopped += run.cancel(agent_id, tree=bool(request.get("tree")), force=force)
        except UnknownAgentError as exc:
            return {"ok": False, "code": exc.exit_code, "error": str(exc)}
        return {"ok": True, "stopped": stopped}
    return {"ok": False, "code": 2, "error": f"error: unknown control op {op!r}"}


def problem(request: object) -> str | None:
    """What is wrong with a request's shape (None: nothing); `handle` trusts the shape."""
    if not isinstance(request, dict):
        return "a request is a JSON object"
    op = request.get("op")
    if not isinstance(op, str) or op not in _OPS:
        return f"unknown control op {str(op)[:40]!r}"
    extra = set(request) - {"op", *_OPS[op]}
    if extra:
        return f"unexpected field(s) for {op}: {', '.join(sorted(map(str, extra)))[:200]}"
    if any(not isinstance(request.get(k, False), bool) for k in ("tree", "force", "after_turn")):
        return "tree, force and after_turn are true or false"
    agents = request.get("agents")
    if op == "cancel" and not (
        isinstance(agents, list)
        and 0 < len(agents) <= MAX_AGENTS
        and all(isinstance(a, str) and len(a) <= 256 for a in agents)
    ):
        return "cancel needs a list of agent ids"
    if op == "add" and not (
        all(isinstance(request.get(k, ""), str) for k in ("id", "prompt", "kind"))
        and isinstance(request.get("depends_on", []), list)
        and all(isinstance(d, str) for d in request.get("depends_on", []))
    ):
        return "add needs id, prompt and kind as text and depends_on as a list of ids"
    return None


Handler = Callable[[dict[str, Any]], dict[str, Any] | None]
"""More ops for the socket: an answer, or None for a request it does not handle."""


def _peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process at the other end of ``conn`` (Linux ``SO_PEERCRED``)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = struct.unpack("3i", creds)[0]
    return pid if pid > 0 else None


def _answer(run: Run, line: bytes, more: Handler | None = None, peer: int | None = None) -> bytes:
    why: str | None
    request: Any = None
    if len(line) >= MAX_REQUEST:
        why = f"larger than {MAX_REQUEST} bytes"
    else:
        try:
            request = json.loads(line)
        except RecursionError:
            why, request = "nested too deeply", None
        except ValueError:
            why, request = "not JSON", None
        else:
            why = problem(request)
    if why is not None and more is not None and isinstance(request, dict):
        extra = more(request)  # the ops of nested runs (they check their own fields)
        if extra is not None:
            return json.dumps(extra).encode() + b"\n"
    if why is None:
        answer = handle(run, request, peer=peer)
    else:
        answer = {"ok": False, "code": 2, "error": f"error: bad control request: {why}"}
    return json.dumps(answer).encode() + b"\n"


class _Server:
    """Answers each request in the loop turn its line arrives in: no streams, no tasks.

    A stream server needs four or five loop turns per request (accept, connection_made,
    the task's start, the read, the drain); while agents flood output every turn is long,
    so here the accept callback reads, answers and closes at once when the request is
    already there (it nearly always is), else the connection's reader callback does.
    """

    IDLE = 5.0
    """A client that connects and says nothing is dropped after this long."""

    def __init__(
        self,
        run: Run,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        more: Handler | None = None,
    ) -> None:
        self.run = run
        self.more = more
        self.sock = sock
        self.loop = loop
        self.clients: dict[socket.socket, tuple[bytearray, asyncio.TimerHandle]] = {}

    def on_accept(self) -> None:
        for _ in range(64):  # a bounded share of one turn
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError:
                return  # out of descriptors for now: the next turn tries again
            conn.setblocking(False)
            self.clients[conn] = (bytearray(), self.loop.call_later(self.IDLE, self.drop, conn))
            self.on_readable(conn, first=True)

    def on_readable(self, conn: socket.socket, first: bool = False) -> None:
        buf, _ = self.clients[conn]
        try:
            chunk = conn.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            if first:
                self.loop.add_reader(conn.fileno(), self.on_readable, conn)
            return
        except OSError:
            self.drop(conn)
            return
        buf += chunk
        line, newline, _ = bytes(buf).partition(b"\n")
        if chunk and not newline and len(buf) < MAX_REQUEST:
            if first:
                self.loop.add_reader(conn.fileno(), self.on_readable, conn)
            return
        if line:
            try:
                answer = _answer(self.run, line, self.more, _peer_pid(conn))
                conn.send(answer)  # small: fits the buffer
            except OSError:
                pass  # the client went away; nothing to answer
        self.drop(conn)

    def drop(self, conn: socket.socket) -> None:
        entry = self.clients.pop(conn, None)
        if entry is None:
            return
        entry[1].cancel()
        self.loop.remove_reader(conn.fileno())
        conn.close()

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        for conn in list(self.clients):
            self.drop(conn)
        self.sock.close()


@contextlib.contextmanager
def _bindable(path: Path) -> Iterator[str]:
    """``path`` as an address for bind/connect: AF_UNIX allows only 107 bytes, so a long
    one goes through ``/proc/self/fd`` and a descriptor of its directory."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def open_control_server(
    run: Run, path: Path, *, more: Handler | None = None
) -> AsyncIterator[None]:
    """Serve the control socket at ``path`` for as long as the block runs (``more`` answers
    the ops it knows before `handle` does).

    A socket left by a killed orchestrator is replaced; anything else in its place (a link,
    a file, a directory, another user's socket) is `RunDirRefused`."""
    with contextlib.suppress(FileNotFoundError):
        check_entry(path, os.lstat(path), "socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _bindable(path) as address:
            sock.bind(address)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    loop = asyncio.get_running_loop()
    server = _Server(run, sock, loop, more)
    loop.add_reader(sock.fileno(), server.on_accept)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def request(path: Path, payload: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any] | None:
    """Send one request; None when no orchestrator listens there.

    Only to a socket of this user at ``path`` itself (`RunDirRefused` for a link or another
    user's socket: a request is never sent somewhere else)."""
    try:
        check_entry(path, os.lstat(path), "socket")
    except FileNotFoundError:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, _bindable(path) as address:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return None  # no orchestrator listens, or it closed while ending: the caller decides
    except OSError as exc:
        raise RunError(f"error: the control socket did not answer: {exc}") from exc
    answer = json.loads(data) if data else None
    return answer if isinstance(answer, dict) else None


def request_live(
    rundir: RunDir, payload: dict[str, Any], *, patience: float = 2.0
) -> dict[str, Any] | None:
    """`request`, retried while an orchestrator holds the lock but has no socket up yet.

    That happens for a moment while a run starts (the socket opens just before the first
    agent) and while it ends; None means no orchestrator runs here.
    """
    deadline = time.monotonic() + patience
    while True:
        answer = request(rundir.socket, payload)
        if answer is not None or not is_locked(rundir) or time.monotonic() >= deadline:
            return answer
        time.sleep(0.05)  # noqa: TID251 - a short-lived CLI process, not event-loop code
