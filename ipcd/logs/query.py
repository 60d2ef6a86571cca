"""Answering `logs.query` from the store, on read-only connections, within a deadline.

`Reader` keeps a small pool of read-only connections (WAL lets them run
beside the writer).  Each query runs in a session: one read transaction
(a snapshot) with a deadline (`[control] query_timeout_s`).  SQLite checks
the deadline every few thousand VM steps (a progress handler) and the grep
function before each entry it tests, so a query that runs longer is stopped
and answered with -32002 (`data.limit = "query_timeout_s"`); waiting for a
pool connection counts against the same deadline, and a non-admin uid may
hold at most half the pool, so one user's slow queries leave room for others.

Time bounds never depend on an index on time: ids order time (`time` is the
time received, non-decreasing but for clock steps), so `since`/`until` become
id bounds by binary search over ids (`time_to_id`, a few dozen rowid
lookups), and the exact time test stays in the WHERE.  A clock stepped back
can hide entries from a time bound near the step; nothing else is affected.

`query_json` encodes entries as it reads them and stops with -32002
(`data.limit = "max_queued_bytes_per_connection"`) as soon as the reply
would pass that size, so a large result is never built whole.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ipcd.errors import LimitReached
from ipcd.logs.entries import entry_dict, entry_json, utf8_len
from ipcd.logs.filters import Filters
from ipcd.logs.grep import Grep, compile_grep
from ipcd.logs.store import COLUMNS, connect

POOL_SIZE = 8
PROGRESS_STEPS = 2000  # SQLite VM steps between two looks at the deadline
MAX_ID = 2**63 - 1  # SQLite's largest integer
_COLS = ", ".join(COLUMNS)


class Expired(Exception):
    """Raised inside SQLite (by the grep function) once the deadline has passed."""


def timeout_error(timeout_s: float) -> LimitReached:
    return LimitReached(
        f"query took longer than query_timeout_s = {timeout_s:g} s: narrow it (since, until, ident, unit, "
        "priority, uid) or simplify grep",
        "query_timeout_s",
        timeout_s,
    )


class ReadConnection:
    """One read-only connection, its deadline and the pattern its grep function tests."""

    def __init__(self, path: str) -> None:
        self.db = connect(path, readonly=True)
        self.deadline = float("inf")
        self.grep: Grep | None = None
        self.db.create_function("ipcd_grep", 1, self._grep)
        self.db.set_progress_handler(self._progress, PROGRESS_STEPS)

    def _grep(self, data: bytes | None) -> bool:
        if time.monotonic() > self.deadline:
            raise Expired  # SQLite stops the statement: "user-defined function raised exception"
        return data is not None and self.grep is not None and self.grep.search(data)

    def _progress(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0  # nonzero: SQLite interrupts

    @contextlib.contextmanager
    def session(self, deadline: float, timeout_s: float, grep: str | None) -> Iterator[sqlite3.Connection]:
        """A read transaction that ends with -32002 (query_timeout_s) if it runs past `deadline`."""
        db = self.db
        try:
            self.grep = compile_grep(grep) if grep is not None else None
            self.deadline = deadline
            db.execute("BEGIN")
            yield db
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise timeout_error(timeout_s) from None
            raise
        finally:
            self.grep = None
            self.deadline = float("inf")  # before the ROLLBACK, which must not be interrupted
            if db.in_transaction:
                db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()


class Reader:
    """Queries on a pool of read-only connections."""

    def __init__(self, path: str, size: int = POOL_SIZE) -> None:
        self.path = path
        self._size = size
        self._per_uid = max(1, size // 2)
        self._free: list[ReadConnection] = []
        self._all: list[ReadConnection] = []
        self._busy_by_uid: dict[int, int] = {}
        self._cv = threading.Condition()
        self._closed = False

    @contextlib.contextmanager
    def session(self, f: Filters, timeout_s: float, uid: int | None = None) -> Iterator[sqlite3.Connection]:
        """A connection in a read transaction, for at most `timeout_s` (waiting for it included).

        `uid` is a non-admin's: it may hold at most half the pool at once.
        """
        deadline = time.monotonic() + timeout_s
        conn = self._acquire(deadline, timeout_s, uid)
        try:
            with conn.session(deadline, timeout_s, f.grep) as db:
                yield db
        finally:
            self._release(conn, uid)

    def _acquire(self, deadline: float, timeout_s: float, uid: int | None) -> ReadConnection:
        with self._cv:
            while True:
                mine = self._busy_by_uid.get(uid, 0) if uid is not None else 0
                if mine < self._per_uid or uid is None:
                    if self._free:
                        conn = self._free.pop()
                        break
                    if len(self._all) < self._size:
                        conn = ReadConnection(self.path)
                        self._all.append(conn)
                        break
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise timeout_error(timeout_s)
                self._cv.wait(left)
            if uid is not None:
                self._busy_by_uid[uid] = mine + 1
            return conn

    def _release(self, conn: ReadConnection, uid: int | None) -> None:
        with self._cv:
            if uid is not None:
                n = self._busy_by_uid.get(uid, 1) - 1
                if n:
                    self._busy_by_uid[uid] = n
                else:
                    self._busy_by_uid.pop(uid, None)
            if self._closed:
                conn.close()
            else:
                self._free.append(conn)
            self._cv.notify_all()

    def query(self, f: Filters, timeout_s: float = 5.0, uid: int | None = None) -> list[dict[str, Any]]:
        """The entries `f` selects, in id order."""
        with self.session(f, timeout_s, uid) as db:
            rows, newest_first = select(db, f, _COLS)
            out = [entry_dict(r) for r in rows]
        if newest_first:
            out.reverse()
        return out

    def query_json(self, f: Filters, timeout_s: float, max_bytes: int, uid: int | None = None) -> str:
        """`{"entries": [...]}` as JSON text; -32002 as soon as it would pass `max_bytes`."""
        parts: list[str] = []
        size = len('{"entries":[]}') - 1  # each entry adds itself and a comma, but for one
        with self.session(f, timeout_s, uid) as db:
            rows, newest_first = select(db, f, _COLS)
            for row in rows:
                text = entry_json(row)
                size += utf8_len(text) + 1
                if size > max_bytes:
                    raise LimitReached(
                        f"the reply would pass max_queued_bytes_per_connection = {max_bytes} bytes: "
                        "ask for fewer entries (limit) or page with after_id/before_id",
                        "max_queued_bytes_per_connection",
                        max_bytes,
                    )
                parts.append(text)
        if newest_first:
            parts.reverse()
        return '{"entries":[' + ",".join(parts) + "]}"

    def backlog_start(
        self, f: Filters, n: int, up_to: int, timeout_s: float, uid: int | None = None
    ) -> tuple[int | None, int]:
        """The oldest of the newest `n` entries `f` selects with id <= `up_to`, and how many there are."""
        bounded = replace(f, limit=n, after_id=None, before_id=min(up_to, MAX_ID - 1) + 1)
        with self.session(bounded, timeout_s, uid) as db:
            ids = [r[0] for r in select(db, bounded, "id")[0]]
        return (ids[-1] if ids else None), len(ids)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for conn in self._free:
                conn.close()
            self._free.clear()
            self._cv.notify_all()


def select(db: sqlite3.Connection, f: Filters, columns: str) -> tuple[Iterator[tuple[Any, ...]], bool]:
    """The rows `f` selects: (rows, newest_first).

    With `after_id`, the oldest `limit` after it, in id order; without, the
    newest `limit` (below `before_id` if given), newest first.
    """
    low, high = id_range(db, f)
    if low >= high:
        return iter(()), False
    where, args = f.where()
    if low > 0:
        where += " AND id >= ?"
        args.append(low)
    if high <= MAX_ID:
        where += " AND id < ?"
        args.append(high)
    if f.grep is not None:
        where += " AND ipcd_grep(CAST(message AS BLOB))"  # last: the cheap tests go first
    newest_first = f.after_id is None
    order = "DESC" if newest_first else "ASC"
    # Row by row: a large entry is encoded and let go before the next is read.
    cur = db.execute(f"SELECT {columns} FROM entries WHERE {where} ORDER BY id {order} LIMIT ?", (*args, f.limit))
    return iter(cur), newest_first


def id_range(db: sqlite3.Connection, f: Filters) -> tuple[int, int]:
    """[low, high): the ids `f` can select, from after_id/before_id and since/until."""
    low = 0 if f.after_id is None else f.after_id + 1
    high = MAX_ID + 1 if f.before_id is None else f.before_id
    if f.since is not None:
        low = max(low, time_to_id(db, f.since, after=False))
    if f.until is not None:
        high = min(high, time_to_id(db, f.until, after=True))
    return low, high


def time_to_id(db: sqlite3.Connection, t: float, after: bool) -> int:
    """The smallest id from which on entries have time >= t (> t with `after`), by binary search over ids.

    One past the last id if no entry is that late.  Ids need not be dense
    (retention leaves gaps): each probe reads the first entry at or above an id.
    """
    first = db.execute("SELECT id, time FROM entries ORDER BY id LIMIT 1").fetchone()
    if first is None:
        return 0
    last = db.execute("SELECT id, time FROM entries ORDER BY id DESC LIMIT 1").fetchone()

    def reached(when: float) -> bool:
        return when > t if after else when >= t

    if reached(first[1]):
        return int(first[0])
    if not reached(last[1]):
        return int(last[0]) + 1
    lo, hi = int(first[0]), int(last[0])  # not reached at the entry `lo`; reached from `hi` on
    probe = "SELECT id, time FROM entries WHERE id >= ? ORDER BY id LIMIT 1"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        row_id, when = db.execute(probe, (mid,)).fetchone()  # exists: `hi` does
        if reached(when):
            hi = mid
        else:
            lo = row_id
    return hi
