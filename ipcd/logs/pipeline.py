"""The log side as one part the daemon starts, watches, reconfigures and stops.

It holds the store's writer, the intake, the datagram server and its
thread, the readers' pool and the live followers' hub, and gives the
control side what it needs by type (`Reader`, `FollowHub`) and the status
sections `logs` and `store`.  Which socket it serves and when it starts and
stops is the daemon's business.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from ipcd.config import Config
from ipcd.control.app import App
from ipcd.logs.intake import Intake
from ipcd.logs.query import FollowHub, Reader
from ipcd.logs.server import LogServer
from ipcd.logs.writer import Writer


class LogPipeline:
    def __init__(self, cfg: Config, db_path: str, sock: socket.socket, *, owned: bool) -> None:
        """Open the store (raises sqlite3.Error) and set up the server on `sock`."""
        self.db_path = db_path
        self.writer = Writer(db_path, cfg.store)
        self.hub = FollowHub(self.writer.next_id - 1)
        self.writer.on_commit = self.hub.publish
        self.reader = Reader(db_path)
        self.intake = Intake(cfg.log, self.writer)
        # A self-bound socket gets the receive buffer asked for; systemd's ReceiveBuffer= sets its own.
        rcvbuf = cfg.log.receive_buffer_bytes if owned else None
        self.server = LogServer(sock, self.intake, owned=owned, rcvbuf=rcvbuf)
        self._thread: threading.Thread | None = None

    def provide(self, app: App) -> None:
        app.provide(self.reader)
        app.provide(self.hub)
        app.add_section("logs", self.intake.status)
        app.add_section("store", self.store_status)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.5,), name="ipcd-log")
        self._thread.start()

    def configure(self, cfg: Config) -> None:
        self.intake.configure(cfg.log)
        self.writer.cfg = cfg.store

    def problem(self, stale_s: float) -> str | None:
        """None while the log thread is alive and turning (or idle)."""
        if self.writer.dead:
            return f"the store writer died: {self.writer.dead}"
        if self._thread is None or not self._thread.is_alive():
            return "thread ipcd-log is not running"
        idle = time.monotonic() - self.server.last_progress
        if idle > stale_s:
            return f"the log reader and store writer have been stuck for {idle:.0f} s"
        return None

    def store_status(self) -> dict[str, Any]:
        w = self.writer
        out: dict[str, Any] = {
            "path": self.db_path,
            "bytes": w.file_bytes(),
            "entries": w.entries,
            "commits": w.commits,
            "deleted": w.deleted,
            "writer": "dead" if w.dead else ("failing" if w.error else "ok"),
        }
        if w.error or w.dead:
            out["error"] = w.dead or w.error
        return out

    def stop_reading(self) -> None:
        """End the read loop (the socket stays open, and its queue with it)."""
        self.server.shutdown()

    def drain(self) -> int:
        """Read what is still queued on the socket and close it; how many datagrams."""
        n = self.server.drain()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join()
        return n

    def close(self) -> None:
        """Commit what is pending and close the store."""
        self.writer.close()
        self.reader.close()
