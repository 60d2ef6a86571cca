"""Live followers of the log (`logs.follow`), all served by one thread.

A follower is a cursor over the store, not a copy of it: the log process
only says how far it has committed (`FollowHub.publish`, from the commit
pipe), and the hub's thread reads on from each follower's cursor, in id
order, and offers the entries to its connection (`Stream.offer`).  So:

- entries come in id order, with no gap and no repeat, however large a commit;
- a follower whose connection has no room is passed over until the
  connection's pump has made room (`on_room`): one that stops reading costs
  no memory and no work, and never slows intake or the other followers;
- one more than `[log] follow_max_lag` entries behind skips ahead and, in the
  place of what it skipped, gets `lagged` with how many matching entries that
  was (counted from the store);
- a turn ends after `PAGE` entries or `SLICE_S` seconds (at most
  `[control] query_timeout_s`), and the next turn goes to the follower with
  work that has used the least time so far (fair queuing, as CFS does), so a
  costly filter costs its own follower time, and the others at most one
  entry's match (RE2's, which cannot be stopped halfway: `grep` bounds it).
  A statement stopped at the slice's end is retried on a smaller id range
  next turn, so every follower makes progress.

A stream never costs a thread (DESIGN.md "Limits"): however many followers,
this module runs one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ipcd.logs.entries import entry_json
from ipcd.logs.filters import Filters
from ipcd.logs.grep import compile_grep
from ipcd.logs.query import ReadConnection
from ipcd.logs.store import COLUMNS
from ipcd.wire import jsonrpc

log = logging.getLogger("ipcd")

PAGE = 256  # entries a follower is sent in one turn
SLICE_S = 0.02  # a turn's time
FIRST_CHUNK = 4096  # ids read by one statement; halved when a statement is stopped
COUNT_FACTOR = 16  # counting without grep reads this many times more ids per statement
_COLS = ", ".join(COLUMNS)
_MESSAGE = COLUMNS.index("message")


class Outlet(Protocol):
    """Where a follower's notifications go (`control.streams.Stream`)."""

    closed: bool

    def offer(self, line: bytes, on_room: Callable[[], None]) -> bool: ...


@dataclass(frozen=True)
class FollowLimits:
    max_lag: int  # [log] follow_max_lag
    timeout_s: float  # [control] query_timeout_s


class Follower:
    """One `logs.follow` stream: its filters, its cursor, what it owes its reader."""

    def __init__(self, filters: Filters, out: Outlet, cursor: int, limits: Callable[[], FollowLimits]) -> None:
        self.filters = filters
        self.out = out
        self.cursor = cursor  # the last id passed (sent, or not matching)
        self.limits = limits
        self.skip_to: int | None = None  # skipping ahead: counting up to here
        self.missed = 0  # skipped entries not yet reported
        self.blocked = False  # no room on the connection: wait for `on_room`
        self.failed_at = -1  # the head at which reading failed: wait for the next commit
        self.closed = False
        self.chunk = FIRST_CHUNK
        self.used_s = 0.0  # time spent on its turns (the hub serves the least-used first)
        self.hub: FollowHub | None = None

    def on_room(self) -> None:
        self.blocked = False
        if self.hub is not None:
            self.hub.kick()

    def _offer(self, line: bytes) -> bool:
        self.blocked = True  # first: `on_room` may run before `offer` returns
        if self.out.offer(line, self.on_room):
            self.blocked = False
            return True
        if self.out.closed:
            self.closed = True
        return False

    def idle(self, head: int) -> bool:
        return self.closed or self.blocked or self.failed_at == head or (self.cursor >= head and not self.missed)

    def turn(self, conn: ReadConnection, head: int) -> None:
        """Read on from the cursor for one slice; the hub calls it while `idle` is false."""
        limits = self.limits()
        conn.deadline = time.monotonic() + min(SLICE_S, limits.timeout_s)
        try:
            if self.skip_to is None and head - self.cursor > limits.max_lag:
                self.skip_to = head - limits.max_lag
            if self.skip_to is not None and not self._count(conn.db, conn.deadline):
                return
            if self.missed:
                if not self._offer(_lagged(self.missed)):
                    return
                self.missed = 0
            self._send(conn.db, head, conn.deadline)
        except sqlite3.OperationalError:
            if time.monotonic() <= conn.deadline:
                raise
            self.chunk = max(1, self.chunk // 2)  # stopped at the slice's end: a smaller range next turn
        finally:
            conn.deadline = float("inf")

    def _sql(self, columns: str, lo: int, hi: int, count: bool = False) -> tuple[str, list[Any]]:
        where, args = self.filters.where()
        order = "" if count else " ORDER BY id"
        return f"SELECT {columns} FROM entries WHERE {where} AND id > ? AND id <= ?{order}", [*args, lo, hi]

    def _send(self, db: sqlite3.Connection, head: int, deadline: float) -> None:
        grep = compile_grep(self.filters.grep) if self.filters.grep is not None else None
        sent = 0
        while self.cursor < head and sent < PAGE:
            if time.monotonic() > deadline:
                return
            hi = min(head, self.cursor + self.chunk)
            cur = db.execute(*self._sql(_COLS, self.cursor, hi))
            try:
                for row in cur:
                    if time.monotonic() > deadline:
                        return
                    if grep is not None and not grep.search_text(row[_MESSAGE]):
                        self.cursor = row[0]
                        continue
                    if sent >= PAGE or not self._offer(_entry(row)):
                        return
                    self.cursor = row[0]
                    sent += 1
            finally:
                cur.close()  # ends the statement's read snapshot: the WAL can be checkpointed
            self.cursor = hi
            self.chunk = min(self.chunk * 2, FIRST_CHUNK)

    def _count(self, db: sqlite3.Connection, deadline: float) -> bool:
        """Count matching entries up to `skip_to` into `missed`; True once there."""
        assert self.skip_to is not None
        grep = compile_grep(self.filters.grep) if self.filters.grep is not None else None
        while self.cursor < self.skip_to:
            if time.monotonic() > deadline:
                return False
            hi = min(self.skip_to, self.cursor + self.chunk * (1 if grep else COUNT_FACTOR))
            if grep is None:
                self.missed += db.execute(*self._sql("count(*)", self.cursor, hi, count=True)).fetchone()[0]
            else:
                cur = db.execute(*self._sql("id, CAST(message AS BLOB)", self.cursor, hi))
                try:
                    for row_id, data in cur:
                        if time.monotonic() > deadline:
                            return False
                        self.missed += grep.search(data)
                        self.cursor = row_id
                finally:
                    cur.close()
            self.cursor = hi
        self.skip_to = None
        return True


def _entry(row: tuple[Any, ...]) -> bytes:
    return jsonrpc.to_bytes(jsonrpc.notification_line("logs.entry", jsonrpc.Raw(entry_json(row))))


def _lagged(missed: int) -> bytes:
    return jsonrpc.to_bytes(jsonrpc.notification_line("lagged", {"stream": "logs.follow", "missed": missed}))


class FollowHub:
    """Every live follower, and the one thread that serves them.

    `head` is the last id committed, as far as the hub has heard.  The
    thread starts with the first follower (never before the log process is
    forked) and sleeps while no follower has anything to do.
    """

    def __init__(self, db_path: str, head: int = 0) -> None:
        self.db_path = db_path
        self.head = head
        self._followers: list[Follower] = []
        self._listeners: list[Callable[[int], None]] = []  # told each commit's last id (forwarding)
        self._cv = threading.Condition()
        self._kicked = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._followers)

    def add(self, f: Follower) -> None:
        f.hub = self
        with self._cv:
            if self._closed:
                raise RuntimeError("the follow hub is closed")
            # A newcomer starts level with the least-used follower: never ahead of the others, never behind.
            f.used_s = min((x.used_s for x in self._followers), default=0.0)
            self._followers = [*self._followers, f]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ipcd-follow", daemon=True)
                self._thread.start()
            self._kicked = True
            self._cv.notify()

    def remove(self, f: Follower) -> None:
        f.closed = True
        with self._cv:
            self._followers = [x for x in self._followers if x is not f]

    def listen(self, fn: Callable[[int], None]) -> None:
        """Call `fn(last_id)` at each commit, on the thread that hears of it (it must not block)."""
        with self._cv:
            self._listeners = [*self._listeners, fn]

    def unlisten(self, fn: Callable[[int], None]) -> None:
        with self._cv:
            self._listeners = [x for x in self._listeners if x != fn]

    def publish(self, last_id: int) -> None:
        """The log process committed up to `last_id`."""
        if last_id > self.head:
            self.head = last_id
        self.kick()
        for fn in self._listeners:  # the list is replaced, never changed in place
            fn(last_id)

    def kick(self) -> None:
        with self._cv:
            self._kicked = True
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join(10.0)

    def _run(self) -> None:
        conn: ReadConnection | None = None
        failing = False
        try:
            while self._wait():
                try:
                    if conn is None:
                        conn = ReadConnection(self.db_path)
                    self._round(conn)
                    failing = False
                except Exception:  # tried again at the next commit; said once, not at each
                    if not failing:
                        log.exception("the log followers cannot be served")
                    failing = True
        finally:
            if conn is not None:
                conn.close()

    def _wait(self) -> bool:
        with self._cv:
            while not self._kicked and not self._closed:
                self._cv.wait()
            self._kicked = False
            return not self._closed

    def _round(self, conn: ReadConnection) -> None:
        """A turn for each follower with work, the least-used first; again at once while any has more."""
        head = self.head
        ready = [f for f in self._followers if not f.idle(head)]  # the list is replaced, never changed in place
        ready.sort(key=_used)
        for f in ready:
            if self._closed:
                return
            if f.idle(head):
                continue
            started = time.monotonic()
            try:
                f.turn(conn, head)
            except Exception:  # the store cannot be read now: this follower waits for the next commit
                if f.failed_at < 0:
                    log.exception("a log follower could not read the store")
                f.failed_at = head
            f.used_s += time.monotonic() - started
            if not f.idle(head):
                self._kicked = True


def _used(f: Follower) -> float:
    return f.used_s
