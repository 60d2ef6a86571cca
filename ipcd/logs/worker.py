"""The log process's side: intake and the store's writer, on its own GIL.

`run` is what the forked log process does (DESIGN.md "Processes and
sockets"): open the store (creating or migrating it), serve the log socket
on its one thread, publish its counters to shared memory and the last
committed id through the commit pipe, answer the control process's
requests (`configure`, `stop`) on a private socket pair, and on `stop`
read what is still queued, commit and exit.  It never talks to peers but
through the log socket.  The control process's side is `process`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import socket
import sqlite3
from typing import Any

from ipcd.config import Config
from ipcd.logs.intake import Intake
from ipcd.logs.server import LogServer
from ipcd.logs.shared import WRITER_DEAD, WRITER_FAILING, WRITER_OK, Shared
from ipcd.logs.writer import Writer

log = logging.getLogger("ipcd")

PR_SET_NAME = 15  # prctl(2)


def send(chan: socket.socket, message: dict[str, Any]) -> None:
    chan.sendall(pickle.dumps(message))


class Publisher:
    """The log side's counters to shared memory, and each commit to the commit pipe."""

    def __init__(self, shared: Shared, intake: Intake, writer: Writer, commit_w: int) -> None:
        self.shared = shared
        self.intake = intake
        self.writer = writer
        self.commit_w = commit_w
        self._text: str | None = None
        self._commits = 0

    def turn(self) -> None:
        i, w = self.intake, self.writer
        state = WRITER_DEAD if w.dead else WRITER_FAILING if w.error else WRITER_OK
        self.shared.update(
            {
                "received": i.received,
                "stored": w.stored,
                "rate_limited": i.rate_limited,
                "truncated": i.truncated,
                "malformed": i.malformed,
                "dropped": w.dropped + w.unstorable,
                "pending": w.pending,
                "entries": w.entries,
                "commits": w.commits,
                "deleted": w.deleted,
                "writer_state": state,
                "failures": w.failures,
                "oldest_us": int(w.oldest() * 1e6),
                "senders": i.limiter.windows,
                "senders_shared": i.limiter.shared,
            }
        )
        self.shared.beat()
        text = w.dead or w.error
        if text != self._text:
            self._text = text
            self.shared.set_text(text)

    def committed(self, last_id: int) -> None:
        if self.writer.commits != self._commits:  # not at start, when nothing was committed yet
            self._commits = self.writer.commits
            self.shared.observe("intake_latency", self.writer.last_wait_s)
            self.shared.observe("commit_duration", self.writer.last_commit_s)
        self.turn()
        self.shared.set("last_id", last_id)
        try:
            os.write(self.commit_w, b"!")  # a wake-up; the id itself is in shared memory
        except (BlockingIOError, BrokenPipeError):
            pass  # already awake, or the control process is gone


def run(
    cfg: Config, db_path: str, sock: socket.socket, owned: bool, chan: socket.socket, commit_w: int, shared: Shared
) -> int:
    """The log process: returns its exit status."""
    _name_process(b"ipcd-log")
    # The control process decides when to stop and reload: a Ctrl-C in a
    # terminal reaches the whole process group, SIGHUP is the control side's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        writer = Writer(db_path, cfg.store)
    except sqlite3.Error as e:
        send(chan, {"op": "failed", "error": f"cannot open the store {db_path}: {e}"})
        return 1
    intake = Intake(cfg.log, writer)
    server = LogServer(sock, intake, owned=owned, rcvbuf=cfg.log.receive_buffer_bytes if owned else None)
    publisher = Publisher(shared, intake, writer, commit_w)
    writer.on_commit = publisher.committed
    server.on_turn = publisher.turn

    stop = server.request_stop

    def on_message() -> None:
        try:
            data = chan.recv(1 << 20)
        except OSError:
            data = b""
        if not data:  # the control process is gone: keep what was sent, then go
            stop()
            return
        msg = pickle.loads(data)
        if msg["op"] == "configure":
            intake.configure(msg["log"])
            writer.cfg = msg["store"]
            log.setLevel(msg["log_level"].upper())  # ipcd's own diagnostics, as the control process's
            send(chan, {"op": "configured"})
        elif msg["op"] == "stop":
            stop()

    signal.signal(signal.SIGTERM, lambda signum, frame: stop())
    server.watched[chan.fileno()] = on_message
    publisher.committed(writer.next_id - 1)
    send(chan, {"op": "ready", "last_id": writer.next_id - 1})
    server.serve_forever(0.5)
    if writer.dead:
        publisher.turn()
        return 1
    drained = server.drain()
    server.server_close()
    writer.close()
    publisher.turn()
    try:
        send(chan, {"op": "stopped", "drained": drained})
    except OSError:
        pass
    return 0


def _name_process(name: bytes) -> None:
    """Show as `ipcd-log` in ps and top (/proc/PID/comm)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):
        pass
