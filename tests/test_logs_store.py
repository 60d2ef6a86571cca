"""`ipcd.logs.store`: the schema, its migrations, and its columns against the entry's fields."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Ipcd
from helpers_writer import db, make_cfg, open_writer, path, reader, row, user_version

from ipcd.logs.store import COLUMNS, SCHEMA_VERSION
from ipcd.logs.writer import Received, Writer, row_values
from ipcd.wire.logparse import LogEntry

__all__ = ["open_writer", "path", "reader"]  # the helpers' fixtures (the tests here use them, or their fixtures do)


# The schema as ipcd 0.1 shipped it (user_version 1), written out by hand:
# what a store on disk from before the kv table looks like.
SCHEMA_V1 = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, timestamp TEXT, priority INTEGER NOT NULL,
    facility INTEGER NOT NULL, ident TEXT, pid INTEGER, hostname TEXT, msgid TEXT,
    structured_data TEXT, fields TEXT, message TEXT NOT NULL, format TEXT NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0, sender_pid INTEGER, sender_uid INTEGER,
    sender_gid INTEGER, sender_comm TEXT
);
CREATE INDEX entries_time ON entries(time);
CREATE INDEX entries_ident ON entries(ident);
CREATE INDEX entries_sender_uid ON entries(sender_uid);
PRAGMA user_version = 1;
"""


def test_new_store_is_created_at_the_current_schema(path: Path, open_writer: Any) -> None:
    w = open_writer()
    assert SCHEMA_VERSION == 6
    assert user_version(path) == SCHEMA_VERSION
    with db(path) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = tuple(r[1] for r in c.execute("PRAGMA table_info(entries)"))
    assert tables == {"entries", "meta"}  # key/value state has a file of its own
    assert cols == COLUMNS
    assert (w.next_id, w.entries) == (1, 0)


def test_store_at_version_1_is_migrated_and_keeps_its_entries(path: Path, open_writer: Any) -> None:
    with db(path) as c:
        c.executescript(SCHEMA_V1)
        c.execute(
            "INSERT INTO entries (id, time, priority, facility, ident, message, format, truncated) "
            "VALUES (1, 10.0, 3, 1, 'old', 'first', 'rfc3164', 0), "
            "(7, 11.0, 6, 1, 'old', 'second', 'plain', 1)"
        )
        c.commit()
    assert user_version(path) == 1
    w = open_writer()
    assert user_version(path) == SCHEMA_VERSION
    with db(path) as c:
        assert c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM meta").fetchone()[0] == 0
    assert (w.next_id, w.entries) == (8, 2)  # ids go on after the highest kept one
    w.add([row("third")])
    w.commit()
    with db(path) as c:
        got = c.execute("SELECT id, ident, message, truncated FROM entries ORDER BY id").fetchall()
    assert got == [(1, "old", "first", 0), (7, "old", "second", 1), (8, "tag", "third", 0)]


def test_empty_file_is_migrated_from_version_0(path: Path, open_writer: Any) -> None:
    path.touch()
    open_writer()
    assert user_version(path) == SCHEMA_VERSION


def test_store_from_a_newer_ipcd_is_refused(path: Path) -> None:
    with db(path) as c:
        c.executescript(SCHEMA_V1)
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(sqlite3.DatabaseError) as exc:
        Writer(str(path), make_cfg())
    assert str(exc.value) == (
        f"store schema version {SCHEMA_VERSION + 1} is newer than this ipcd knows ({SCHEMA_VERSION}): upgrade ipcd"
    )
    assert user_version(path) == SCHEMA_VERSION + 1  # untouched
    with db(path) as c:
        assert c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone()[0] == 0


def test_failed_migration_is_rolled_back(path: Path) -> None:
    # A version-1 store that already has something called kv: migration 2 fails as a whole.
    with db(path) as c:
        c.executescript(SCHEMA_V1 + "CREATE TABLE kv (x);")
    with pytest.raises(sqlite3.OperationalError, match="table kv already exists"):
        Writer(str(path), make_cfg())
    assert user_version(path) == 1
    with db(path) as c:
        assert [r[1] for r in c.execute("PRAGMA table_info(kv)")] == ["x"]


def test_columns_agree_with_the_table_the_entry_and_the_row(path: Path, open_writer: Any) -> None:
    """The store's columns, the parsed entry's fields and `row_values`' order name the same things."""
    w = open_writer()
    table = [r[1] for r in w.conn.execute("PRAGMA table_info(entries)")]
    assert tuple(table) == COLUMNS
    entry = LogEntry(*(f"<{name}>" for name in LogEntry._fields))  # every field a distinct value
    r = Received(*(f"<{name}>" for name in Received._fields))._replace(entry=entry)
    flat = dict(zip(COLUMNS, row_values(7, r), strict=True))
    json_columns = {"structured_data", "fields"}
    for name in COLUMNS:
        if name == "id":
            assert flat[name] == 7
        elif name in LogEntry._fields:
            want = getattr(entry, name)
            assert flat[name] == (json.dumps(want) if name in json_columns else want), name
        else:
            assert flat[name] == getattr(r, name), name
    # Every parsed field is stored but `malformed` (a counter), every row field but the entry itself.
    assert set(LogEntry._fields) - set(COLUMNS) == {"malformed"}
    assert set(Received._fields) - set(COLUMNS) == {"entry"}


def test_store_from_a_newer_ipcd_stops_startup(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd()
    d.state_dir.mkdir(parents=True)
    conn = sqlite3.connect(str(d.state_dir / "ipcd.db"))
    try:
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()
    d.start(wait=False)
    assert d.wait() == 1
    assert (
        f"cannot open the store {d.state_dir / 'ipcd.db'}: store schema version 99 is newer than this ipcd knows"
        in d.stderr()
    )
