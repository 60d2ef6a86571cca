"""The SQLite store: schema and migrations, the one writer, retention.

All writes go through `Writer`, which runs on the thread that reads the log
socket (see `logserver`): datagrams are read, parsed and inserted by one
thread, into one open transaction committed every `commit_interval_ms` or
`commit_batch` rows, so intake never waits on a commit per message, and a
burst that outruns the store waits in the kernel's socket queue, which
blocks the senders: back-pressure, not loss.  One thread rather than a
reader and a writer handing rows over: under the GIL the hand-over cost more
than the work (75k against 110k messages/s on two cores, bench/intake.py).
Other threads' writes (key/value state) are `submit`ted as ops and
committed at once.  After each commit `on_commit` hears the last id
(log followers read on from there).  Retention (`max_entries`, `max_bytes`, `max_age_s`) runs
between commits.

WAL mode with synchronous=NORMAL: a crash of ipcd (kill -9) loses nothing
committed; a power cut may lose the last commits.  Reading is `logquery`'s
business, on its own connections.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipcd.config import StoreConfig

log = logging.getLogger("ipcd")

DB_NAME = "ipcd.db"

COLUMNS = (
    "id",
    "time",
    "timestamp",
    "priority",
    "facility",
    "ident",
    "pid",
    "hostname",
    "msgid",
    "structured_data",
    "fields",
    "message",
    "format",
    "truncated",
    "sender_pid",
    "sender_uid",
    "sender_gid",
    "sender_comm",
)

# Each migration takes the store from version N to N+1 (PRAGMA user_version).
MIGRATIONS: list[str] = [
    # 1: the log
    """
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        timestamp TEXT,
        priority INTEGER NOT NULL,
        facility INTEGER NOT NULL,
        ident TEXT,
        pid INTEGER,
        hostname TEXT,
        msgid TEXT,
        structured_data TEXT,
        fields TEXT,
        message TEXT NOT NULL,
        format TEXT NOT NULL,
        truncated INTEGER NOT NULL DEFAULT 0,
        sender_pid INTEGER,
        sender_uid INTEGER,
        sender_gid INTEGER,
        sender_comm TEXT
    );
    CREATE INDEX entries_time ON entries(time);
    CREATE INDEX entries_ident ON entries(ident);
    CREATE INDEX entries_sender_uid ON entries(sender_uid);
    """,
    # 2: shared key/value state
    """
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        version INTEGER NOT NULL,
        expires_at REAL,
        set_at REAL NOT NULL,
        set_by_uid INTEGER,
        set_by_pid INTEGER,
        set_by_comm TEXT
    ) WITHOUT ROWID;
    """,
    # 3: the highest id ever given, so that ids never go back after retention emptied the log
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None, cached_statements=256)
    conn.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


def open_db(path: str) -> sqlite3.Connection:
    """Open (creating or migrating) the store; the writer's connection."""
    conn = connect(path)
    # Before the first table; an existing store keeps its size.  16 KiB pages
    # make an insert about a sixth cheaper than the 4 KiB default (bench/).
    conn.execute("PRAGMA page_size = 16384")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -65536")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"store schema version {version} is newer than this ipcd knows ({SCHEMA_VERSION}): upgrade ipcd"
        )
    for n in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[n].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {n + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("store migrated to schema version %d", n + 1)
    return SCHEMA_VERSION


# -- the writer -----------------------------------------------------------------

Row = tuple[Any, ...]  # (time, LogEntry, truncated, sender_pid, uid, gid, comm)


@dataclass
class Op:
    """A write that is not a log row: run in the writer's transaction, committed at once."""

    fn: Callable[[sqlite3.Connection], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def wait(self, timeout_s: float | None = 30.0) -> Any:
        if not self.done.wait(timeout_s):
            raise TimeoutError("the store writer did not answer in time")
        if self.error is not None:
            raise self.error
        return self.result


_W = len(COLUMNS)
_ROW_SQL = f"({', '.join('?' * _W)})"


@functools.lru_cache(maxsize=128)
def insert_sql(rows: int) -> str:
    """One INSERT for `rows` rows: sqlite3 binds and steps it in one call."""
    return f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES {', '.join([_ROW_SQL] * rows)}"


MULTI = 256  # rows per INSERT statement at most
_INSERT_ONE = insert_sql(1)


def _flatten(first_id: int, rows: list[Row]) -> list[Any]:
    """Rows as one flat list of column values, ids from `first_id` (COLUMNS order)."""
    flat: list[Any] = []
    extend = flat.extend
    dumps = json.dumps
    for entry_id, (t, e, truncated, spid, suid, sgid, scomm) in enumerate(rows, first_id):
        sd, fields = e[7], e[8]
        extend(
            (
                entry_id,
                t,
                e[6],
                e[0],
                e[1],
                e[2],
                e[3],
                e[4],
                e[5],
                dumps(sd) if sd else None,
                dumps(fields, ensure_ascii=False, default=str) if fields else None,
                e[9],
                e[10],
                truncated,
                spid,
                suid,
                sgid,
                scomm,
            )
        )
    return flat


def row_dict(values: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row as the entry shape DESIGN.md gives."""
    d = dict(zip(COLUMNS, values, strict=False))
    for key in ("structured_data", "fields"):
        if d[key] is not None:
            d[key] = json.loads(d[key])
    d["truncated"] = bool(d["truncated"])
    return d


class Writer:
    """The store's one writer; it runs on the thread that reads the log socket.

    Log rows are inserted as they come into one open transaction, which is
    committed every `commit_interval_ms` or `commit_batch` rows.  Until the
    commit they stay in memory too, so that a failed commit (a full or
    read-only disk) loses nothing: they are written again when the store
    recovers, and only past `max_pending` are new rows dropped and counted.
    Other threads' writes are `submit`ted as ops and committed at once.
    """

    def __init__(self, path: str, cfg: StoreConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.conn = open_db(path)
        last = self.conn.execute(
            "SELECT max(coalesce((SELECT max(id) FROM entries), 0),"
            " coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0))"
        ).fetchone()[0]
        self.next_id: int = last + 1
        self.entries: int = self.conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        self.stored = 0  # rows committed since start
        self.deleted = 0  # rows removed by retention since start
        self.dropped = 0  # rows refused while the store could not be written
        self.unstorable = 0  # rows sqlite3 could not bind (a bug elsewhere): skipped, counted
        self._skipped = 0  # of them, in the open transaction
        self.commits = 0
        self.error: str | None = None  # the last write failure, until a write succeeds
        self.failures = 0
        self.dead: str | None = None  # set if the writer's thread died
        self.last_progress = time.monotonic()
        self.on_commit: Callable[[int], None] | None = None  # told the last id of each commit
        self._pending: list[Any] = []  # flat values of the rows not committed yet
        self._inserted = 0  # how many of them the open transaction holds
        self._in_tx = False
        self._first_at = 0.0
        self._retry_at = 0.0
        self._next_retention = 0.0
        self._ops: deque[Op] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakes_pending = False
        self._closed = False

    # -- from other threads --------------------------------------------------

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Op:
        """Queue a write for the writer's thread; `wait()` on the result."""
        op = Op(fn)
        if self._closed or self.dead:
            op.error = RuntimeError("the store is closed" if self._closed else f"the store writer died: {self.dead}")
            op.done.set()
            return op
        self._ops.append(op)
        self.wake()
        return op

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
        return len(self._pending) // _W

    # -- on the writer's thread ----------------------------------------------

    def add(self, rows: list[Row]) -> None:
        """Take log rows: into the open transaction now, committed when due."""
        if self.error is not None and self.pending + len(rows) > self.cfg.max_pending:
            self.dropped += len(rows)  # the store has been failing for a while: counted, never silent
            return
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.extend(_flatten(self.next_id + self.pending, rows))
        if self.error is None:
            if self.pending >= self.cfg.commit_batch:
                self.commit()
            elif len(self._pending) - self._inserted >= MULTI * _W:
                try:
                    self._insert_pending(whole=True)  # a full statement's worth; the rest waits
                except sqlite3.Error as e:
                    self._failed(e)

    def due_in(self) -> float:
        """Seconds until `service` has work: a commit, an op, a retry."""
        if self._ops:
            return 0.0
        if not self._pending:
            return max(0.0, self._next_retention - time.monotonic())
        if self.error is not None:
            return max(0.0, self._retry_at - time.monotonic())
        return max(0.0, self._first_at + self.cfg.commit_interval_ms / 1000.0 - time.monotonic())

    def service(self) -> None:
        """Commit if due, run queued ops, enforce retention."""
        self.last_progress = time.monotonic()
        if self._ops or self._wakes_pending:
            self.drain_wakes()
        if self._ops or (self._pending and self.due_in() <= 0):
            self.commit()
        if not self._in_tx and self.error is None and time.monotonic() >= self._next_retention:
            self._retain()

    def commit(self) -> bool:
        ops = []
        while self._ops:
            ops.append(self._ops.popleft())
        try:
            self._insert_pending()
            results = [self._run_op(op) for op in ops]
            if self._in_tx:
                self.conn.execute("COMMIT")
                self._in_tx = False
        except sqlite3.Error as e:
            self._failed(e)
            for op in ops:  # ops are not retried: their callers hear of it now
                op.error = e
                op.done.set()
            return False
        rows = self.pending
        self._pending, self._inserted = [], 0
        self.next_id += rows  # a skipped row leaves its id unused
        self.entries += rows - self._skipped
        self.stored += rows - self._skipped
        self.unstorable += self._skipped
        self._skipped = 0
        self.commits += 1
        if self.error is not None:
            log.warning("the store is writable again, after %d failed attempts", self.failures)
            self.error = None
        for op, (result, err) in zip(ops, results, strict=False):
            op.result, op.error = result, err
            op.done.set()
        if rows and self.on_commit is not None:
            self.on_commit(self.next_id - 1)
        return True

    def _begin(self) -> None:
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def _insert_pending(self, whole: bool = False) -> None:
        """Insert the pending rows not yet in the transaction (`whole`: only
        full statements of MULTI rows, fewer statements being cheaper)."""
        flat, start = self._pending, self._inserted
        step = MULTI * _W
        end = start + (len(flat) - start) // step * step if whole else len(flat)
        if start >= end:
            return
        self._begin()
        for i in range(start, end, step):
            chunk = flat[i : min(i + step, end)]
            try:
                self.conn.execute(insert_sql(len(chunk) // _W), chunk)
            except (ValueError, OverflowError, TypeError):  # a row sqlite3 cannot bind (not the store's fault)
                self._insert_one_by_one(chunk)
        self._inserted = end

    def _insert_one_by_one(self, chunk: list[Any]) -> None:
        """Insert what binds; a row that cannot be bound is counted, logged once, and skipped,
        so that one bad row never blocks the rows after it."""
        for j in range(0, len(chunk), _W):
            row = chunk[j : j + _W]
            try:
                self.conn.execute(_INSERT_ONE, row)
            except (ValueError, OverflowError, TypeError) as e:
                self._skipped += 1
                if self.unstorable + self._skipped == 1:
                    log.error("an entry could not be stored and was skipped (id %s): %s", row[0], e)

    def _run_op(self, op: Op) -> tuple[Any, BaseException | None]:
        self._begin()
        self.conn.execute("SAVEPOINT op")
        try:
            result = op.fn(self.conn)
        except sqlite3.OperationalError:
            raise  # the store's failure, not the op's
        except Exception as e:  # the op's own failure (a conflict...): undo just it
            self.conn.execute("ROLLBACK TO op")
            self.conn.execute("RELEASE op")
            return None, e
        self.conn.execute("RELEASE op")
        return result, None

    def _rollback(self) -> None:
        if self._in_tx:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._in_tx = False
        self._inserted = 0  # pending rows are inserted again on the next attempt
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
        if (self._pending or self._ops) and not self.commit():
            log.error("the store could not be written at stop: %d entries lost (%s)", self.pending, self.error)
        while self._ops:  # submitted after the last commit
            op = self._ops.popleft()
            op.error = RuntimeError("the store is closed")
            op.done.set()
        self.conn.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # retention -------------------------------------------------------------

    def _retain(self) -> None:
        self._next_retention = time.monotonic() + self.cfg.retention_interval_s
        try:
            self._delete_over_count()
            self._delete_over_age()
            self._delete_over_bytes()
        except sqlite3.Error as e:
            self._rollback()
            self._failed(e)

    def _delete_before(self, first_kept: int) -> None:
        # Retention may empty the log: remember the last id, which must never be given again.
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?)", (self.next_id - 1,))
        # In chunks, so that intake never waits long behind one big delete.
        while True:
            low = self.conn.execute("SELECT min(id) FROM entries").fetchone()[0]
            if low is None or low >= first_kept:
                return
            upto = min(first_kept, low + 50_000)
            cur = self.conn.execute("DELETE FROM entries WHERE id < ?", (upto,))
            self.entries -= cur.rowcount
            self.deleted += cur.rowcount

    def _delete_over_count(self) -> None:
        if self.entries > self.cfg.max_entries:
            self._delete_before(self.next_id - self.cfg.max_entries)

    def _delete_over_age(self) -> None:
        if self.cfg.max_age_s <= 0:
            return
        cutoff = time.time() - self.cfg.max_age_s
        first = self.conn.execute("SELECT min(id) FROM entries WHERE time >= ?", (cutoff,)).fetchone()[0]
        self._delete_before(first if first is not None else self.next_id)

    def used_bytes(self) -> int:
        pages, free, size = (
            self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def _delete_over_bytes(self) -> None:
        # The oldest share that brings the store to 90% of the limit; the share is
        # an estimate (pages are shared), so look again, a few times at most.
        for _ in range(5):
            used = self.used_bytes()
            if used <= self.cfg.max_bytes or self.entries == 0:
                return
            share = (used - 0.9 * self.cfg.max_bytes) / used
            low = self.conn.execute("SELECT min(id) FROM entries").fetchone()[0]
            self._delete_before(low + max(1, int(self.entries * share)))

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(self.path + suffix).st_size
            except OSError:
                pass
        return total
