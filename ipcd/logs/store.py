"""The SQLite store of the log: its schema, migrations and connections.

One row of `entries` is a `StoredEntry`; `COLUMNS` is its fields' order, the
order of the table's columns (a test checks the two agree) and of every
INSERT and SELECT.  Writing is `writer`'s business (one writer, batched
commits), removing old entries `retention`'s, reading `query`'s.

WAL mode with synchronous=NORMAL: a crash of ipcd (kill -9) loses nothing
committed; a power cut may lose the last commits.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any, NamedTuple

log = logging.getLogger("ipcd")

DB_NAME = "ipcd.db"


class StoredEntry(NamedTuple):
    """One log entry as stored (DESIGN.md "Log socket" lists the fields)."""

    id: int
    time: float  # received, epoch seconds
    timestamp: str | None  # as claimed, not interpreted
    priority: int
    facility: int
    ident: str | None
    pid: int | None  # claimed
    hostname: str | None
    msgid: str | None
    structured_data: str | None  # JSON
    fields: str | None  # JSON
    message: str
    format: str
    truncated: int
    sender_pid: int | None  # trusted, from SCM_CREDENTIALS
    sender_uid: int | None
    sender_gid: int | None
    sender_comm: str | None
    sender_unit: str | None  # the systemd unit, from /proc/PID/cgroup


COLUMNS: tuple[str, ...] = StoredEntry._fields

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
    # 4: key/value state lives in kv.db (state.kvdb); the daemon copies the rows there first
    """
    DROP TABLE IF EXISTS kv;
    """,
    # 5: the sender's systemd unit (ipcctl logs -u); older entries have none
    """
    ALTER TABLE entries ADD COLUMN sender_unit TEXT;
    """,
    # 6: no index on time: ids already order it (`time` is when the entry was received), so a
    # time bound is found by a binary search over ids, and each insert costs one index less
    """
    DROP INDEX IF EXISTS entries_time;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def old_kv_rows(path: str) -> list[tuple[Any, ...]]:
    """The key/value rows of a store from before kv.db (schema 2 and 3); [] if none."""
    if not os.path.exists(path):
        return []
    conn = sqlite3.connect(path)  # before the log process opens it
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv'").fetchone() is None:
            return []
        return conn.execute(
            "SELECT key, value, version, expires_at, set_at, set_by_uid, set_by_pid, set_by_comm FROM kv"
        ).fetchall()
    finally:
        conn.close()


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


def row_dict(values: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row (COLUMNS order) as the entry shape DESIGN.md gives."""
    d = dict(zip(COLUMNS, values, strict=True))
    for key in ("structured_data", "fields"):
        if d[key] is not None:
            d[key] = json.loads(d[key])
    d["truncated"] = bool(d["truncated"])
    return d


def file_bytes(path: str) -> int:
    """The store's size on disk: the database, its WAL and its shared memory."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(path + suffix).st_size
        except OSError:
            pass
    return total
