"""The forwarder: one thread that hands committed entries to every target.

It runs in the control process (never in the log process, which stays free
for intake), reads committed entries through its own read-only connection
(WAL: beside the writer, never in its way), in id order, a batch at a time,
and is woken by each commit (`FollowHub`).  One poll loop serves all
targets with non-blocking sockets, so a slow or unreachable target never
holds another, nor intake.  The store is the queue: nothing is copied into
memory beyond the batch being written, and each target's cursor (the last
id it delivered) is saved to `forward.db` at most every `SAVE_INTERVAL_S`
and on stop, so restarts and reloads go on where they were.  What a target
does with its entries is `target`'s business.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sqlite3
import threading
import time
from typing import Any

from ipcd.config import ForwardConfig
from ipcd.logs.follow import FollowHub
from ipcd.logs.forward.cursors import Cursors
from ipcd.logs.forward.target import Target
from ipcd.logs.store import COLUMNS, StoredEntry, connect

log = logging.getLogger("ipcd")

SAVE_INTERVAL_S = 1.0
MAX_WAIT_S = 1.0
CONFIGURE_TIMEOUT_S = 10.0


class StoreReader:
    """Committed entries, read-only, on the engine's thread."""

    def __init__(self, path: str) -> None:
        self.conn = connect(path, readonly=True)
        self._sql: dict[str, str] = {}

    def first_id(self) -> int | None:
        value = self.conn.execute("SELECT min(id) FROM entries").fetchone()[0]
        return int(value) if value is not None else None

    def read(self, target: Target, after: int, upto: int) -> list[StoredEntry]:
        where = target.where
        sql = self._sql.get(where)
        if sql is None:
            sql = self._sql[where] = (
                f"SELECT {', '.join(COLUMNS)} FROM entries WHERE id > ? AND id <= ?{where} ORDER BY id LIMIT ?"
            )
        rows = self.conn.execute(sql, (after, upto, *target.args, target.cfg.batch)).fetchall()
        return [StoredEntry._make(r) for r in rows]

    def close(self) -> None:
        self.conn.close()


class Engine:
    """The forwarding thread and its targets."""

    def __init__(self, targets: list[ForwardConfig], db_path: str, cursors_path: str, hub: FollowHub) -> None:
        self.db_path = db_path
        self.cursors_path = cursors_path
        self.hub = hub
        self.hostname = socket.gethostname()
        self.targets: list[Target] = []
        self._cursors: Cursors | None = None
        self._saved: dict[str, int] = {}
        self._saved_at = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pending: list[ForwardConfig] | None = targets
        self._applied = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._store: StoreReader | None = None

    # -- from other threads ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipcd-forward", daemon=True)
        self._thread.start()
        self.hub.listen(self.wake)
        self.configure(None)  # wait until the first targets are set up

    def wake(self, last_id: int = 0) -> None:
        """A commit (FollowHub), a new config or a stop: the loop takes a turn."""
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # already awake, or closed

    def configure(self, targets: list[ForwardConfig] | None) -> None:
        """New targets (a reload); returns once the loop uses them."""
        with self._lock:
            if targets is not None:
                self._pending = targets
            self._applied.clear()
        self.wake()
        if not self._applied.wait(CONFIGURE_TIMEOUT_S):
            log.error("forward: the forwarding thread did not take the new targets in %g s", CONFIGURE_TIMEOUT_S)

    def problem(self, stale_s: float) -> str | None:
        """For the watchdog: None while the forwarding thread runs (a down target is not ipcd's problem)."""
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return "the forwarding thread died (ipcd's log has why)"
        return None

    def status(self) -> list[dict[str, Any]]:
        head = self.hub.head
        out = [t.status(head) for t in self.targets]
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            for t in out:  # never a stale "connected"
                t.update(state="stopped", last_error="the forwarding thread died; ipcd's log has why")
        return out

    def stop(self) -> None:
        self.hub.unlisten(self.wake)
        self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(10.0)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_config()
                self._turn()
        except Exception:
            log.exception("forward: the forwarding thread died; entries are no longer forwarded")
        finally:
            self._save(force=True)
            for t in self.targets:
                t.close()
            if self._store is not None:
                self._store.close()
            if self._cursors is not None:
                self._cursors.close()

    def _turn(self) -> None:
        now, head = time.monotonic(), self.hub.head
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd: dict[int, Target] = {}
        for t in self.targets:
            fd, events = t.fileno(), t.wants()
            if fd is not None and events:
                poller.register(fd, events)
                by_fd[fd] = t
        due = min((t.due(now, head) for t in self.targets), default=float("inf"))
        wait_s = max(0.0, min(due - now, MAX_WAIT_S))
        revents: dict[Target, int] = {}
        for fd, ev in poller.poll(wait_s * 1000):
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            elif fd in by_fd:
                revents[by_fd[fd]] = ev
        now, head = time.monotonic(), self.hub.head
        store = self._open_store()
        for t in self.targets:
            try:
                t.turn(now, head, revents.get(t, 0), store)
            except sqlite3.Error as e:  # the store cannot be read now: try again at the next turn
                t.last_error = f"reading the store: {e}"
            except Exception as e:
                log.exception("forward %s: unexpected error", t.cfg.name)
                t.errors += 1
                t.last_error = f"internal error: {type(e).__name__}: {e}"
        self._save()

    def _open_store(self) -> StoreReader:
        if self._store is None:
            self._store = StoreReader(self.db_path)
        return self._store

    def _take_config(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._apply(pending)
        self._applied.set()

    def _apply(self, configs: list[ForwardConfig]) -> None:
        """Keep unchanged targets as they are; a changed one starts again from its cursor."""
        if configs and self._cursors is None:
            self._cursors = Cursors(self.cursors_path)
            self._saved = self._cursors.load()
        old = {t.cfg.name: t for t in self.targets}
        head = self.hub.head
        targets = []
        for cfg in configs:
            t = old.pop(cfg.name, None)
            if t is not None and t.cfg == cfg:
                targets.append(t)
                continue
            cursor = t.cursor if t is not None else self._saved.get(cfg.name, head)
            if cursor > head:
                log.warning(
                    "forward %s: its cursor %d is past the store's last id %d: from there", cfg.name, cursor, head
                )
                cursor = head
            if t is not None:
                t.close()
            targets.append(Target(cfg, cursor, self.hostname))
        for t in old.values():  # removed; its cursor stays in forward.db should it come back
            t.close()
        self.targets = targets
        self._save(force=True)

    def _save(self, force: bool = False) -> None:
        if self._cursors is None:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_INTERVAL_S:
            return
        changed = {t.cfg.name: t.cursor for t in self.targets if self._saved.get(t.cfg.name) != t.cursor}
        if not changed:
            return
        try:
            self._cursors.save(changed)
        except sqlite3.Error as e:
            log.error("forward: cannot save cursors to %s: %s", self.cursors_path, e)
            return
        self._saved.update(changed)
        self._saved_at = now
