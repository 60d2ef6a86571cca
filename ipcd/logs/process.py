"""The log process, as the control process sees it.

ipcd forks its log pipeline into a process of its own once it has its
sockets (DESIGN.md "Processes and sockets"), so that busy control threads
never take the GIL from intake: a blocked log socket blocks every service
that logs.  This side starts it and waits until the store is open, reads
the store through its own read-only connections (WAL), learns of each commit
through a pipe (and wakes the log followers), reads the log side's counters
from shared memory for `status`, sends it new settings on reload and, on
stop, tells it to read what is queued, commit and exit.  A log process that
dies is a fatal error for ipcd (`on_exit` with the reason: ipcd exits 1):
under systemd the service is restarted, and an activated socket keeps what
was queued meanwhile.  One stopped by SIGTERM (`on_exit(None)`) stops ipcd
as SIGTERM would.  The
other side is `worker`.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ipcd import procfs
from ipcd.config import Config
from ipcd.control.app import App
from ipcd.errors import StartupError
from ipcd.logs import worker
from ipcd.logs.follow import FollowHub
from ipcd.logs.query import Reader
from ipcd.logs.shared import WRITER_DEAD, WRITER_FAILING, Shared
from ipcd.logs.store import file_bytes

log = logging.getLogger("ipcd")

START_TIMEOUT_S = 120.0  # opening (migrating) a large store takes a while
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0  # reading what is queued, then the last commit


class LogProcess:
    def __init__(
        self, cfg: Config, db_path: str, sock: socket.socket, *, owned: bool, on_exit: Callable[[str | None], None]
    ) -> None:
        self.cfg = cfg
        self.db_path = db_path
        self.sock = sock
        self.owned = owned
        self.on_exit = on_exit
        self.shared = Shared()
        self.pid = 0
        self.hub = FollowHub(db_path)
        self.reader = Reader(db_path)
        self.dead: str | None = None
        self._chan: socket.socket | None = None
        self._chan_lock = threading.Lock()
        self._commit_r = -1
        self._watcher: threading.Thread | None = None
        self._stopping = False

    # -- start -------------------------------------------------------------

    def start(self, close_in_child: Iterable[int] = ()) -> None:
        """Fork the log process and wait until its store is open.

        Call before any other thread runs: a fork copies only the calling
        thread, and a lock another thread held would stay held in the child.
        """
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        commit_r, commit_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(commit_w, False)
        pid = os.fork()
        if pid == 0:  # the log process
            status = 1
            try:
                parent.close()
                os.close(commit_r)
                for fd in close_in_child:
                    os.close(fd)
                status = worker.run(self.cfg, self.db_path, self.sock, self.owned, child, commit_w, self.shared)
            except BaseException:
                log.exception("the log process failed")
            finally:
                os._exit(status)
        child.close()
        os.close(commit_w)
        self.pid, self._chan, self._commit_r = pid, parent, commit_r
        self.sock.close()  # the log process reads it; this side only knows its path
        reply = self._receive(START_TIMEOUT_S, ("ready", "failed"))
        if reply is None or reply["op"] != "ready":
            why = reply["error"] if reply is not None and "error" in reply else "it exited at once"
            self._reap(block=True)
            raise StartupError(f"the log process did not start: {why}")
        self.hub.publish(reply["last_id"])
        self._watcher = threading.Thread(target=self._watch_commits, name="ipcd-commits", daemon=True)
        self._watcher.start()
        log.debug("log process %d ready", pid)

    def provide(self, app: App) -> None:
        app.provide(self.reader)
        app.provide(self.hub)
        app.add_section("logs", self.logs_status)
        app.add_section("store", self.store_status)
        app.add_section("log_process", self.process_status)

    def _watch_commits(self) -> None:
        """Wake the followers at each commit; notice the log process's end."""
        while True:
            try:
                data = os.read(self._commit_r, 4096)
            except InterruptedError:
                continue
            if not data:
                break
            self.hub.publish(self.shared.get("last_id"))
        self.hub.publish(self.shared.get("last_id"))
        if self._stopping:
            return
        pid = self.pid
        how = self._reap(block=True)
        if how == "exit status 0":  # it was sent SIGTERM itself: ipcd stops with it
            log.info("the log process (pid %d) was stopped; ipcd stops too", pid)
            self.on_exit(None)
            return
        self.dead = f"the log process (pid {pid}) died: {how}"
        log.error("%s; ipcd stops", self.dead)
        self.on_exit(self.dead)

    # -- requests ------------------------------------------------------------

    def _receive(self, timeout_s: float, expect: tuple[str, ...]) -> dict[str, Any] | None:
        """The next message whose op is one of `expect` (a late answer to an earlier request is passed over)."""
        assert self._chan is not None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self._chan.settimeout(left)
            try:
                data = self._chan.recv(1 << 20)
            except OSError:  # a timeout included
                return None
            if not data:
                return None
            msg: dict[str, Any] = pickle.loads(data)
            if msg.get("op") in expect:
                return msg
        return None

    def _request(self, message: dict[str, Any], timeout_s: float, expect: str) -> dict[str, Any] | None:
        with self._chan_lock:
            if self._chan is None:
                return None
            try:
                self._chan.sendall(pickle.dumps(message))
            except OSError:
                return None
            return self._receive(timeout_s, (expect,))

    def configure(self, cfg: Config, log_level: str) -> None:
        """A reload's log and store settings, and ipcd's own log level; returns once the log process uses them."""
        self.cfg = cfg
        message = {"op": "configure", "log": cfg.log, "store": cfg.store, "log_level": log_level}
        reply = self._request(message, REQUEST_TIMEOUT_S, "configured")
        if reply is None:
            log.error("the log process did not take the new settings")

    # -- health and status -------------------------------------------------

    def problem(self, stale_s: float) -> str | None:
        """None while the log process is alive and turning (or idle)."""
        if self.dead:
            return self.dead
        if self.shared.get("writer_state") == WRITER_DEAD:
            return f"the store writer died: {self.shared.text()}"
        age = self.shared.age_s()
        if age > stale_s:
            return f"the log process has been stuck for {age:.0f} s"
        return None

    def logs_status(self) -> dict[str, int]:
        s = self.shared.snapshot()
        keys = (
            "received",
            "stored",
            "rate_limited",
            "truncated",
            "malformed",
            "dropped",
            "pending",
            "senders",
            "senders_shared",
        )
        return {**{k: s[k] for k in keys}, "followers": len(self.hub)}

    def store_status(self) -> dict[str, Any]:
        s = self.shared.snapshot()
        state = s["writer_state"]
        out: dict[str, Any] = {
            "path": self.db_path,
            "bytes": file_bytes(self.db_path),
            "entries": s["entries"],
            "commits": s["commits"],
            "deleted": s["deleted"],
            "oldest": s["oldest_us"] / 1e6 if s["oldest_us"] else None,
            "writer": "dead" if state == WRITER_DEAD else "failing" if state == WRITER_FAILING else "ok",
        }
        if state != 0:
            out["error"] = self.shared.text()
        return out

    def process_status(self) -> dict[str, Any]:
        return {
            "pid": self.pid or None,
            "rss_bytes": procfs.rss_bytes(self.pid) if self.pid else None,
            "alive": self.dead is None and self.pid != 0,
            "last_turn_s": round(self.shared.age_s(), 3),
        }

    @property
    def received(self) -> int:
        return self.shared.get("received")

    @property
    def dropped(self) -> int:
        return self.shared.get("dropped")

    def store_problem(self) -> str | None:
        return self.shared.text() if self.shared.get("writer_state") else None

    # -- stop --------------------------------------------------------------

    def stop(self) -> int:
        """Tell the log process to read what is queued, commit and exit; how many it read."""
        self._stopping = True
        reply = self._request({"op": "stop"}, STOP_TIMEOUT_S, "stopped")
        if self.pid and reply is None and self.dead is None:
            log.error("the log process did not stop in %g s: killing it", STOP_TIMEOUT_S)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap(block=True)
        if self._watcher is not None:
            self._watcher.join(5.0)
        return int(reply["drained"]) if reply is not None and reply.get("op") == "stopped" else 0

    def _reap(self, block: bool) -> str:
        """Collect the log process's exit; how it ended."""
        if not self.pid:
            return "not started"
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return "already collected"
        if pid == 0:
            return "running"
        self.pid = 0
        if os.WIFSIGNALED(status):
            return f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"

    def close(self) -> None:
        self.hub.close()
        self.reader.close()
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        if self._commit_r >= 0:
            os.close(self._commit_r)
            self._commit_r = -1
