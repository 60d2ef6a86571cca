"""The store's one writer: log rows in batches.

`Writer` runs on the thread that reads the log socket (`logs.server`):
datagrams are read, parsed and inserted by one thread, into one open
transaction committed every `commit_interval_ms` or `commit_batch` rows, so
intake never waits on a commit per message, and a burst that outruns the
store waits in the kernel's socket queue, which blocks the senders:
back-pressure, not loss.  One thread rather than a reader and a writer
handing rows over: under the GIL the hand-over cost more than the work (75k
against 110k messages/s on two cores, bench/intake.py), and still did with
the inserts in chunks, whose steps let go of the GIL (95k against 104k).
After each commit `on_commit` hears the last id (log followers read on from
there).  `retention` runs between commits.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from itertools import chain
from typing import Any, NamedTuple

from ipcd.config import StoreConfig
from ipcd.logs.retention import Retention
from ipcd.logs.store import COLUMNS, file_bytes, open_db
from ipcd.wire.logparse import LogEntry

log = logging.getLogger("ipcd")

ROW_OVERHEAD = 256  # bytes a pending row holds beyond its message, about


class Received(NamedTuple):
    """A parsed datagram and what the kernel says of its sender: what intake hands the writer."""

    time: float
    entry: LogEntry
    truncated: bool
    sender_pid: int
    sender_uid: int
    sender_gid: int
    sender_comm: str | None
    sender_unit: str | None


def row_values(entry_id: int, r: Received) -> tuple[Any, ...]:
    """One row's values in `store.COLUMNS` order."""
    e = r.entry
    sd, fields = e.structured_data, e.fields
    return (
        entry_id,
        r.time,
        e.timestamp,
        e.priority,
        e.facility,
        e.ident,
        e.pid,
        e.hostname,
        e.msgid,
        json.dumps(sd) if sd else None,
        json.dumps(fields, ensure_ascii=False, default=str) if fields else None,
        e.message,
        e.format,
        r.truncated,
        r.sender_pid,
        r.sender_uid,
        r.sender_gid,
        r.sender_comm,
        r.sender_unit,
    )


# Binding a None costs sqlite3 (Python 3.11) far more than a number or a string (it
# looks for an adapter first), and most entries leave the same few columns empty: a
# syslog line has no hostname, msgid, structured data or fields, and a sender outside
# systemd no unit.  Such rows go through statements that say NULL for those columns.
_SPARSE = ("hostname", "msgid", "structured_data", "fields")
PLAIN = tuple(c for c in COLUMNS if c not in _SPARSE and c != "sender_unit")  # and no unit
UNIT = (*PLAIN, "sender_unit")  # in a systemd unit


def _insert_for(columns: tuple[str, ...], rows: int = 1) -> str:
    one = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO entries ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"


INSERT = {cols: _insert_for(cols) for cols in (PLAIN, UNIT, COLUMNS)}  # in the order `split` returns

# Rows go in through statements of many rows each (INSERT ... VALUES (...), (...), ...):
# one step of SQLite for a chunk instead of a reset, a bind and a step per row, which
# makes an insert about a quarter cheaper than executemany (5.6 against 4.2 us a row in
# batches of 64).  A chunk's size is one of these, largest first, so that few statements
# are prepared (and cached); rows wait for a whole chunk of the largest, or the commit.
CHUNKS = (256, 64, 16, 4, 1)
flatten = chain.from_iterable  # a chunk's rows as one list of values, in C (0.1 against 0.16 us a row)
INSERT_MANY = {(cols, n): _insert_for(cols, n) for cols in INSERT for n in CHUNKS}


class Split(NamedTuple):
    """A batch of rows as `add` inserts and counts them."""

    plain: list[tuple[Any, ...]]  # values for the PLAIN statement
    unit: list[tuple[Any, ...]]  # for UNIT
    full: list[tuple[Any, ...]]  # for all COLUMNS
    size: int  # about the memory they hold
    by_uid: dict[int | None, int]  # rows per sender uid
    sizes: dict[int | None, int]  # message bytes per sender uid


def split(first_id: int, rows: list[Received]) -> Split:
    """Rows as values for the PLAIN, UNIT and full (COLUMNS) statements, ids from `first_id`,
    and what they weigh (one pass: this runs for every datagram)."""
    plain: list[tuple[Any, ...]] = []
    unit: list[tuple[Any, ...]] = []
    full: list[tuple[Any, ...]] = []
    by_uid: dict[int | None, int] = {}
    sizes: dict[int | None, int] = {}
    size = ROW_OVERHEAD * len(rows)
    for entry_id, r in enumerate(rows, first_id):
        # Unpacked at once: a NamedTuple's fields read by name cost a lookup each, 20 a row.
        now, e, truncated, sender_pid, uid, sender_gid, comm, sender_unit = r
        priority, facility, ident, pid, hostname, msgid, timestamp, sd, fields, message, fmt, _ = e
        n = len(message)
        size += n
        by_uid[uid] = by_uid.get(uid, 0) + 1
        sizes[uid] = sizes.get(uid, 0) + n
        if hostname is None and msgid is None and sd is None and fields is None:
            values = (
                entry_id,
                now,
                timestamp,
                priority,
                facility,
                ident,
                pid,
                message,
                fmt,
                1 if truncated else 0,  # an int: sqlite3 binds a bool through its adapters, slowly
                sender_pid,
                uid,
                sender_gid,
                comm,
            )
            if sender_unit is None:
                plain.append(values)
            else:
                unit.append((*values, sender_unit))
        else:
            full.append(row_values(entry_id, r))
    return Split(plain, unit, full, size, by_uid, sizes)


class Writer:
    """The store's one writer; it runs on the thread that reads the log socket.

    Log rows go into one open transaction (in chunks: once a chunk's worth
    waits, and at the commit), which is committed every `commit_interval_ms`,
    or at `commit_batch` rows or `max_pending_bytes`, whichever comes first.
    Until the commit they stay in memory too, so that a failed commit (a full
    or read-only disk) loses nothing: they are written again when the store
    recovers, and only past `max_pending` are new rows dropped and counted.
    """

    def __init__(self, path: str, cfg: StoreConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.conn = open_db(path)
        self.retention = Retention(self.conn)
        last = self.conn.execute(
            "SELECT max(coalesce((SELECT max(id) FROM entries), 0),"
            " coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0))"
        ).fetchone()[0]
        self.next_id: int = last + 1
        self.entries: int = self.conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        self.stored = 0  # rows committed since start
        self.dropped = 0  # rows refused while the store could not be written
        self.unstorable = 0  # rows sqlite3 could not bind (a bug elsewhere): skipped, counted
        self._skipped = 0  # of them, in the open transaction
        self.commits = 0
        self.last_commit_s = self.last_wait_s = 0.0  # the last commit's duration; how long its oldest row waited
        self.error: str | None = None  # the last write failure, until a write succeeds
        self.failures = 0
        self.dead: str | None = None  # set if the writer's thread died
        self.last_progress = time.monotonic()
        self.on_commit: Callable[[int], None] | None = None  # told the last id of each commit
        # The rows not committed yet, by statement, and how many of each the open transaction holds.
        self._pending: dict[tuple[str, ...], list[tuple[Any, ...]]] = {cols: [] for cols in INSERT}
        self._inserted: dict[tuple[str, ...], int] = dict.fromkeys(INSERT, 0)
        self._count = 0  # rows pending
        self._uninserted = 0  # of them, not yet in the open transaction
        self._bytes = 0  # about how much memory they hold
        self._in_tx = False
        self._first_at = 0.0
        self._retry_at = 0.0
        self._next_retention = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakes_pending = False
        self._oldest: float | None = None  # cached; None: look again
        self._by_uid: dict[int | None, int] = {}  # the pending rows by sender uid (for fair retention)
        self._sizes: dict[int | None, int] = {}  # and their messages' bytes
        self._closed = False

    # -- from a signal handler or another thread -----------------------------

    def wake(self) -> None:
        self._wakes_pending = True
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # already awake, or closing

    def drain_wakes(self) -> None:
        self._wakes_pending = False
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, OSError):
            pass

    @property
    def wake_fd(self) -> int:
        return self._wake_r

    @property
    def pending(self) -> int:
        return self._count

    def oldest(self) -> float:
        """When the oldest entry in the store was received (0.0: none is)."""
        if self._oldest is None:
            row = self.conn.execute("SELECT time FROM entries ORDER BY id LIMIT 1").fetchone()
            self._oldest = float(row[0]) if row else 0.0
        return self._oldest

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    # -- on the writer's thread ----------------------------------------------

    def add(self, rows: list[Received]) -> None:
        """Take log rows: into the open transaction now, committed when due."""
        s = split(self.next_id + self._count, rows)
        size = s.size
        cfg = self.cfg
        if self.error is not None and (
            self._count + len(rows) > cfg.max_pending or self._bytes + size > cfg.max_pending_bytes
        ):
            self.dropped += len(rows)  # the store has been failing for a while: counted, never silent
            return
        if not self._count:
            self._first_at = time.monotonic()
        for sender, count in s.by_uid.items():
            self._by_uid[sender] = self._by_uid.get(sender, 0) + count
            self._sizes[sender] = self._sizes.get(sender, 0) + s.sizes[sender]
        for cols, values in zip(INSERT, (s.plain, s.unit, s.full), strict=True):
            if values:
                self._pending[cols] += values
        self._count += len(rows)
        self._uninserted += len(rows)
        self._bytes += size
        if self.error is None:
            if self._count >= cfg.commit_batch or self._bytes >= cfg.max_pending_bytes:  # never more in memory
                self.commit()
            elif self._uninserted >= CHUNKS[0]:  # else at the commit: a burst goes in as few chunks
                try:
                    self._insert_pending()
                except sqlite3.Error as e:
                    self._failed(e)

    def due_in(self) -> float:
        """Seconds until `service` has work: a commit, a retry, retention."""
        if not self._count:
            return max(0.0, self._next_retention - time.monotonic())
        if self.error is not None:
            return max(0.0, self._retry_at - time.monotonic())
        return max(0.0, self._first_at + self.cfg.commit_interval_ms / 1000.0 - time.monotonic())

    def service(self) -> None:
        """Commit if due, enforce retention."""
        self.last_progress = time.monotonic()
        if self._wakes_pending:
            self.drain_wakes()
        if self._count and self.due_in() <= 0:
            self.commit()
        if not self._in_tx and self.error is None and time.monotonic() >= self._next_retention:
            self._retain()

    def commit(self) -> bool:
        started = time.monotonic()
        try:
            self._insert_pending()
            if self._in_tx:
                self.conn.execute("COMMIT")
                self._in_tx = False
        except sqlite3.Error as e:
            self._failed(e)
            return False
        rows = self._count
        if not self._oldest:
            self._oldest = None  # it was empty: the oldest is among these
        self.retention.added(self._by_uid, self._sizes)
        self._by_uid, self._sizes = {}, {}
        for cols in INSERT:
            self._pending[cols] = []
            self._inserted[cols] = 0
        self._count = self._bytes = self._uninserted = 0
        self.next_id += rows  # a skipped row leaves its id unused
        self.entries += rows - self._skipped
        self.stored += rows - self._skipped
        self.unstorable += self._skipped
        self._skipped = 0
        self.commits += 1
        self.last_commit_s, self.last_wait_s = time.monotonic() - started, time.monotonic() - self._first_at
        if self.error is not None:
            log.warning("the store is writable again, after %d failed attempts", self.failures)
            self.error = None
        if rows and self.on_commit is not None:
            self.on_commit(self.next_id - 1)
        return True

    def _begin(self) -> None:
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def _insert_pending(self) -> None:
        """Insert the pending rows not yet in the open transaction."""
        for cols, values in self._pending.items():
            start = self._inserted[cols]
            if start == len(values):
                continue
            self._begin()
            chunk = values[start:] if start else values
            try:
                self._insert_many(cols, chunk)
            except (ValueError, OverflowError, TypeError):  # a row sqlite3 cannot bind (not the store's fault)
                self._insert_one_by_one(cols, chunk)
            self._inserted[cols] = len(values)
        self._uninserted = 0

    def _insert_many(self, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        execute = self.conn.execute
        at, left = 0, len(rows)
        for n in CHUNKS:
            sql = INSERT_MANY[cols, n]
            while left >= n:
                execute(sql, list(flatten(rows[at : at + n])))
                at += n
                left -= n

    def _insert_one_by_one(self, cols: tuple[str, ...], chunk: list[tuple[Any, ...]]) -> None:
        """Insert what binds; a row that cannot be bound is counted, logged once, and skipped,
        so that one bad row never blocks the rows after it.  (The rows before it in `chunk`
        are in already: OR IGNORE passes over them.)"""
        sql = INSERT[cols].replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
        for row in chunk:
            try:
                self.conn.execute(sql, row)
            except (ValueError, OverflowError, TypeError) as e:
                self._skipped += 1
                if self.unstorable + self._skipped == 1:
                    log.error("an entry could not be stored and was skipped (id %s): %s", row[0], e)

    def _rollback(self) -> None:
        if self._in_tx:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._in_tx = False
        self._inserted = dict.fromkeys(INSERT, 0)  # pending rows are inserted again on the next attempt
        self._uninserted = self._count
        self._skipped = 0

    def _failed(self, e: sqlite3.Error) -> None:
        self._rollback()
        self.failures += 1
        self._retry_at = time.monotonic() + 1.0
        if self.error is None:
            log.error("cannot write the store %s: %s; retrying every second, entries wait in memory", self.path, e)
        self.error = str(e)

    def close(self) -> None:
        """Commit what is pending and close (on the writer's thread, or after it ended)."""
        self._closed = True
        if self._count and not self.commit():
            log.error("the store could not be written at stop: %d entries lost (%s)", self.pending, self.error)
        self.conn.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # retention -------------------------------------------------------------

    @property
    def deleted(self) -> int:
        """Rows removed by retention since start."""
        return self.retention.deleted

    def _retain(self) -> None:
        self._next_retention = time.monotonic() + self.cfg.retention_interval_s
        try:
            before = self.retention.deleted
            self.entries = self.retention.run(self.cfg, self.next_id, self.entries)
            if self.retention.deleted != before:
                self._oldest = None
        except sqlite3.Error as e:
            self._rollback()
            self._failed(e)

    def file_bytes(self) -> int:
        return file_bytes(self.path)
