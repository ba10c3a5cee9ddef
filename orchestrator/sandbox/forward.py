"""``network: gateway``: inside a sandbox without network, the run's gateway on 127.0.0.1.

Run by bubblewrap as the sandbox's command, in its own network namespace (only loopback)::

    python -I -S forward.py SOCKET PORT -- ARGV...

It listens on ``127.0.0.1:PORT`` (the port the agent's gateway URL names), forks a relay
that copies each connection to the gateway's Unix socket ``SOCKET`` (bound into the
sandbox's view), and execs ``ARGV`` in its own place, with the signal dispositions a bare
spawn gets. The relay never holds the agent's output pipes and ignores SIGTERM (the agent
keeps its gateway through its grace period); it ends with the sandbox's PID namespace, when
the command does. The listening socket exists before the command starts: its first request
never races the relay. Only the standard library: this file runs as a script, with
``-S`` (no site packages) to start fast; only agents that ask for ``network: gateway`` pay
for it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

_CHUNK = 65536
_BACKLOG = 128


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: forward.py SOCKET PORT -- ARGV...\n")
        return 2
    path, port, command = argv[1], int(argv[2]), argv[4:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(_BACKLOG)
    if os.fork() == 0:
        try:
            _relay(listener, path)
        finally:
            os._exit(0)
    listener.close()
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # what the command would get from a bare spawn
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"{command[0]}: {exc.strerror}\n")
    return 127


def _relay(listener: socket.socket, path: str) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the agent's pipes
        os.dup2(devnull, fd)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
        except OSError:
            upstream.close()
            client.close()
            continue
        done = threading.Semaphore(0)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_copy, args=(src, dst, done), daemon=True).start()
        threading.Thread(target=_close_after, args=(done, client, upstream), daemon=True).start()


def _copy(src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.release()


def _close_after(done: threading.Semaphore, *socks: socket.socket) -> None:
    done.acquire()
    done.acquire()
    for s in socks:
        s.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
