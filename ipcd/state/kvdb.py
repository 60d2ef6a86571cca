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
changes in the order they were made, and only of committed ones).  A
writer may also `hand_off` instead of waiting: its `reply` is called by
the thread that commits the write, right after the commit, and the writer's
thread goes on at once (it commits itself if no commit is under way, and
then, up to `LEAD_ROUNDS` in all, what queued meanwhile).  If a
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
LEAD_ROUNDS = 4  # commits a thread that leaves its reply to the committer makes in a row, at most
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


class Write:
    """One write for kv.db: a statement and its params (`many`: a list of rows for executemany).

    `undo` runs (newest first) if it could not be committed, `after` (in
    submission order) once it is; both callables are optional, and a
    subclass may override the methods instead.  `reply`, if set
    (`hand_off`), is called once the write is done, on the thread that
    committed it, with the error if it failed.
    """

    __slots__ = ("sql", "params", "many", "on_undo", "on_after", "error", "done", "reply")

    def __init__(
        self,
        sql: str,
        params: tuple[Any, ...] | list[tuple[Any, ...]],
        many: bool = False,
        undo: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.sql = sql
        self.params = params
        self.many = many
        self.on_undo = undo
        self.on_after = after
        self.error: BaseException | None = None  # set if this write could not be committed
        self.done = False
        self.reply: Callable[[BaseException | None], None] | None = None

    def undo(self) -> None:
        if self.on_undo is not None:
            self.on_undo()

    def after(self) -> None:
        if self.on_after is not None:
            self.on_after()


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
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)  # entered through _lock: a Condition's `with` is Python code
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
        with self._lock:
            if self._closing:
                write.error = RuntimeError("the key/value store is closed")
                write.done = True
                batch = Batch()
                batch.finish(write.error)
                return batch
            self._queue.append(write)  # a commit under way wakes the writer thread for it when it ends
            return self._batch

    def kick(self) -> None:
        """Have the writer thread commit what is queued (a write nobody waits on)."""
        with self._lock:
            self._cv.notify()

    def commit(self, batch: Batch, timeout_s: float | None = None) -> None:
        """Return once `batch` is committed (or raise its error).

        With no commit under way, the caller commits everything queued itself,
        at once (a lone writer never waits for another thread); else the
        writer thread commits it next, with whatever else queued meanwhile.
        """
        with self._lock:
            lead = not self._committing and batch is self._batch and bool(self._queue)
            if lead:
                writes, self._queue, self._batch = self._queue, [], Batch()
                self._committing = True
        if lead:
            self._lead(writes, batch)
        batch.wait(timeout_s)

    def hand_off(self, write: Write, batch: Batch, reply: Callable[[BaseException | None], None]) -> bool:
        """Have `reply` run once `write` is done, on the thread that commits it; False if it is done already.

        With no commit under way, the caller commits at once (as `commit`);
        else it returns at once, and the commit under way is followed by the
        writer thread's.
        """
        with self._lock:
            if write.done:
                return False
            write.reply = reply
            lead = not self._committing and batch is self._batch and bool(self._queue)
            if lead:
                writes, self._queue, self._batch = self._queue, [], Batch()
                self._committing = True
        if lead:
            self._lead(writes, batch, LEAD_ROUNDS)
        return True

    def _lead(self, writes: list[Write], batch: Batch, rounds: int = 1) -> None:
        """Commit `writes`, then (up to `rounds` in all) what queued meanwhile; then the writer thread's turn."""
        try:
            while True:
                self._commit(writes, batch)
                rounds -= 1
                with self._lock:
                    if not rounds or not self._queue or self._closing:
                        break
                    writes, batch = self._queue, self._batch
                    self._queue, self._batch = [], Batch()
        finally:
            with self._lock:
                self._committing = False
                if self._queue or self._closing:
                    self._cv.notify()  # the writer thread: what queued during this commit, or the close

    def _run(self) -> None:
        """Commit what queued while another commit ran (group commit), and at close what is left."""
        while True:
            with self._lock:
                while (not self._queue or self._committing) and not (self._closing and not self._committing):
                    self._cv.wait()
                if not self._queue:
                    return
                writes, batch = self._queue, self._batch
                self._queue, self._batch = [], Batch()
                self._committing = True
            self._lead(writes, batch)

    def _commit(self, writes: list[Write], batch: Batch) -> None:
        """Commit `writes`, then answer them: waiters through `batch`, handed-off writes through `reply`.

        Answered whatever happens: an error nobody expected (in an `undo`, say)
        is every unanswered write's error, never a writer left waiting.
        """
        unexpected: BaseException | None = None
        try:
            self._apply(writes, batch)
        except BaseException as e:
            unexpected = e
            raise
        finally:
            if not batch.done:
                batch.finish(unexpected)
            with self._lock:
                for w in writes:
                    w.done = True
                replies = [w for w in writes if w.reply is not None]
            for w in replies:
                reply, w.reply = w.reply, None  # often a bound method of `w`'s: no cycle left for the gc
                try:
                    reply(w.error or unexpected)  # type: ignore[misc]
                except Exception:
                    log.exception("error while answering a key/value write")

    def _apply(self, writes: list[Write], batch: Batch) -> None:
        failed: list[Write] = []
        try:
            self._write(writes)
        except Exception as e:
            failed = self._each_alone(writes, e)
        if failed:
            self.counters.failures += 1
            log.error("cannot write the key/value store %s: %s", self.path, failed[0].error)
            for w in reversed(failed):
                w.undo()
        if len(failed) < len(writes):
            self.counters.commits += 1
            self.counters.writes += len(writes) - len(failed)
            for w in writes:
                if w.error is None:
                    try:
                        w.after()
                    except Exception:
                        log.exception("error while telling watchers of a change")
        batch.finish(failed[0].error if len(failed) == len(writes) else None)

    def _each_alone(self, writes: list[Write], error: Exception) -> list[Write]:
        """A commit failed: try each write alone (one bad write must not fail the others); those that failed."""
        if len(writes) == 1:
            writes[0].error = error
            return writes
        for w in writes:
            try:
                self._transaction([w])
            except Exception as each:
                w.error = each
        return [w for w in writes if w.error is not None]

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
        with self._lock:
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
