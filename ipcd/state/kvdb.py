"""kv.db: the key/value table on disk, and its one writer with group commit.

Key/value state has a file of its own, apart from the log's store, so that
the log process and the control process never queue on one SQLite write
lock (DESIGN.md "Processes and sockets").  Writes are `submit`ted by the
threads that serve `kv.set`/`kv.delete` (in the order they hold, under
their own lock), then `commit`ted: when no commit is under way, the caller
commits whatever is queued itself, at once, in its own thread (no hand-over
to another thread for a lone writer); when one is, its write waits for the
next, which takes everything queued meanwhile in one transaction (group
commit) by the writer thread, and every write of it is answered at once.  Each
write may bring an `undo` (run, newest first, if the commit failed) and an
`after` (run in submission order once it is committed: watchers hear of
changes in the order they were made, and only of committed ones).  If a
commit of several writes fails, each is tried alone: one bad write fails
only itself (`Write.error`), never those it shared a commit with.

WAL with synchronous=NORMAL (`[kv] durability = "normal"`): an acknowledged
write survives a crash or kill -9 of ipcd, not necessarily a power loss;
`durability = "fsync"` (synchronous=FULL) survives that too, at a cost per
commit (README "Performance").
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ipcd")

KV_DB_NAME = "kv.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    set_at REAL NOT NULL,
    set_by_uid INTEGER,
    set_by_pid INTEGER,
    set_by_comm TEXT
) WITHOUT ROWID
"""
COLUMNS = ("key", "value", "version", "expires_at", "set_at", "set_by_uid", "set_by_pid", "set_by_comm")
UPSERT = f"INSERT OR REPLACE INTO kv ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
DELETE = "DELETE FROM kv WHERE key = ?"
DELETE_VERSION = "DELETE FROM kv WHERE key = ? AND version = ?"
SYNCHRONOUS = {"normal": "NORMAL", "fsync": "FULL"}
MAX_ROWS = 512  # sets in one multi-row INSERT at most (8 values each: SQLite allows 32766)


@functools.lru_cache(maxsize=64)
def _upsert_rows(n: int) -> str:
    """One INSERT OR REPLACE of `n` rows: rows for the same key are applied in order, the last wins."""
    row = f"({', '.join('?' * len(COLUMNS))})"
    return f"INSERT OR REPLACE INTO kv ({', '.join(COLUMNS)}) VALUES {', '.join([row] * n)}"


class Batch:
    """The writes of one commit; `wait` returns once it is done, or raises its error.

    One per commit, so made cheaply: a bare lock, held until the commit is
    done (a `threading.Event` is a Condition and two locks, several times the
    cost).  Each waiter takes the lock and hands it straight on to the next.
    """

    __slots__ = ("_lock", "done", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.done = False
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        """Done (once): wake the waiters."""
        self.error = error
        self.done = True
        self._lock.release()

    def wait(self, timeout_s: float | None = None) -> None:
        if not self.done:
            if not self._lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
                raise TimeoutError("the key/value writer did not answer in time")
            self._lock.release()
        if self.error is not None:
            raise self.error


@dataclass(slots=True)
class Write:
    sql: str
    params: tuple[Any, ...] | list[tuple[Any, ...]]
    many: bool = False
    undo: Callable[[], None] | None = None
    after: Callable[[], None] | None = None
    error: BaseException | None = None  # set if this write could not be committed


@dataclass
class Counters:
    commits: int = 0
    writes: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


class KvDb:
    def __init__(self, path: str, durability: str = "normal") -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.set_durability(durability)
        self.conn.execute(SCHEMA)
        self.counters = Counters()
        self._cv = threading.Condition()
        self._queue: list[Write] = []
        self._batch = Batch()
        self._committing = False  # one commit at a time, by a caller or the writer thread
        self._closing = False
        self._thread: threading.Thread | None = None

    def set_durability(self, durability: str) -> None:
        self.conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")

    def rows(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM kv").fetchall()

    def import_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows from an older store (before kv.db), in one transaction, before the writer runs."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(UPSERT, rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipcd-kv", daemon=True)
        self._thread.start()

    def submit(self, write: Write) -> Batch:
        """Queue a write for the next commit (the caller keeps the order it wants by
        holding its own lock while it submits); `commit` the batch it joined."""
        with self._cv:
            if self._closing:
                batch = Batch()
                batch.finish(RuntimeError("the key/value store is closed"))
                return batch
            self._queue.append(write)
            if self._committing:
                self._cv.notify()  # the writer thread takes it as soon as the commit under way ends
            return self._batch

    def kick(self) -> None:
        """Have the writer thread commit what is queued (a write nobody waits on)."""
        with self._cv:
            self._cv.notify()

    def commit(self, batch: Batch, timeout_s: float | None = None) -> None:
        """Return once `batch` is committed (or raise its error).

        With no commit under way, the caller commits everything queued itself,
        at once (a lone writer never waits for another thread); else the
        writer thread commits it next, with whatever else queued meanwhile.
        """
        with self._cv:
            lead = not self._committing and batch is self._batch and bool(self._queue)
            if lead:
                writes, self._queue, self._batch = self._queue, [], Batch()
                self._committing = True
        if lead:
            self._lead(writes, batch)
        batch.wait(timeout_s)

    def _lead(self, writes: list[Write], batch: Batch) -> None:
        try:
            self._commit(writes, batch)
        finally:
            with self._cv:
                self._committing = False
                if self._queue or self._closing:
                    self._cv.notify()  # the writer thread: what queued during this commit, or the close

    def _run(self) -> None:
        """Commit what queued while another commit ran (group commit), and at close what is left."""
        while True:
            with self._cv:
                while (not self._queue or self._committing) and not (self._closing and not self._committing):
                    self._cv.wait()
                if not self._queue:
                    return
                writes, batch = self._queue, self._batch
                self._queue, self._batch = [], Batch()
                self._committing = True
            self._lead(writes, batch)

    def _commit(self, writes: list[Write], batch: Batch) -> None:
        try:
            self._write(writes)
        except Exception as e:
            if len(writes) == 1:
                writes[0].error = e
            else:  # one bad write must not fail those that share its commit: each alone, then
                for w in writes:
                    try:
                        self._transaction([w])
                    except Exception as each:
                        w.error = each
        failed = [w for w in writes if w.error is not None]
        if failed:
            self.counters.failures += 1
            log.error("cannot write the key/value store %s: %s", self.path, failed[0].error)
            for w in reversed(failed):
                if w.undo is not None:
                    w.undo()
        if len(failed) < len(writes):
            self.counters.commits += 1
            self.counters.writes += len(writes) - len(failed)
            for w in writes:
                if w.after is not None and w.error is None:
                    try:
                        w.after()
                    except Exception:
                        log.exception("error while telling watchers of a change")
        batch.finish(failed[0].error if len(failed) == len(writes) else None)

    def _write(self, writes: list[Write]) -> None:
        if len(writes) <= MAX_ROWS and all(w.sql is UPSERT for w in writes):
            # The common batch, sets only: ONE statement, its own transaction (autocommit), so
            # one call into SQLite and one hand-back of the GIL, however many threads want it.
            self.conn.execute(_upsert_rows(len(writes)), [v for w in writes for v in w.params])
        else:
            self._transaction(writes)

    def _transaction(self, writes: list[Write]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for w in writes:
                if w.many:
                    self.conn.executemany(w.sql, w.params)
                else:
                    self.conn.execute(w.sql, w.params)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the file."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
        self.conn.close()

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(self.path + suffix).st_size
            except OSError:
                pass
        return total
