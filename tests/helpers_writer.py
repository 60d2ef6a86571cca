"""A store the test writes step by step: rows as `Intake` hands them, a `Writer` the test drives.

Real SQLite files in a temporary directory.  The writer's thread is the
test's thread: rows go in with `add`, and `service`/`commit`/`close` are
called by the test, so every step is deterministic.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipcd.config import StoreConfig
from ipcd.logs.query import Reader
from ipcd.logs.writer import Received, Writer
from ipcd.wire.logparse import LogEntry

# Far from any deadline: commits happen only when a test makes them due.
NEVER_MS = 60_000


def row(
    message: str = "m",
    *,
    t: float | None = None,
    prio: int = 5,
    ident: str | None = "tag",
    pid: int | None = None,
    spid: int = 100,
    uid: int = 0,
    gid: int = 0,
    comm: str | None = "sender",
    unit: str | None = None,
    fields: dict[str, Any] | None = None,
    truncated: bool = False,
) -> Received:
    """A row as `Intake` hands it to the writer."""
    entry = LogEntry(prio, 1, ident, pid, None, None, None, None, fields, message, "rfc3164", False)
    return Received(time.time() if t is None else t, entry, truncated, spid, uid, gid, comm, unit)


@contextlib.contextmanager
def db(path: Path | str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path))
    try:
        yield conn
    finally:
        conn.close()


def ids_on_disk(path: Path | str) -> list[int]:
    """What another connection sees: committed rows only."""
    with db(path) as c:
        return [r[0] for r in c.execute("SELECT id FROM entries ORDER BY id")]


def user_version(path: Path | str) -> int:
    with db(path) as c:
        return int(c.execute("PRAGMA user_version").fetchone()[0])


def make_cfg(**kw: Any) -> StoreConfig:
    return StoreConfig(**{"commit_interval_ms": NEVER_MS, "retention_interval_s": 3600.0, **kw})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ipcd.db"


@pytest.fixture
def open_writer(path: Path) -> Iterator[Any]:
    """Factory: open_writer(**StoreConfig fields) -> a Writer on `path`, closed after the test."""
    made: list[Writer] = []

    def make(**kw: Any) -> Writer:
        w = Writer(str(path), make_cfg(**kw))
        made.append(w)
        return w

    yield make
    for w in made:
        if not w._closed:
            w.close()


@pytest.fixture
def reader(path: Path) -> Iterator[Reader]:
    r = Reader(str(path))
    yield r
    r.close()
