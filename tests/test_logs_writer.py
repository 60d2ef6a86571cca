"""The store without a daemon: `Writer`, `Reader`, `Filters`, `parse_time`, `RateLimiter`.

Real SQLite files in a temporary directory.  The writer's thread is this
test's thread: rows go in with `add`, and `service`/`commit`/`close` are
called here, so every step is deterministic.  Clocks are injected
(`parse_time(value, now)`, `RateLimiter.check(..., now)`, a row's time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from ipcd.config import StoreConfig
from ipcd.logs.filters import Filters, make_filters, parse_time
from ipcd.logs.query import Reader
from ipcd.logs.ratelimit import RateLimiter
from ipcd.logs.retention import fair_levels
from ipcd.logs.store import COLUMNS, SCHEMA_VERSION
from ipcd.logs.writer import Received, Writer, row_values
from ipcd.wire.logparse import LogEntry

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


# --- schema and migrations -------------------------------------------------------


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


# --- the writer: batching, ids, ops ---------------------------------------------------


def test_rows_are_committed_at_commit_batch(path: Path, open_writer: Any) -> None:
    w = open_writer(commit_batch=10)
    w.add([row(f"m{i}") for i in range(9)])
    w.service()  # not due: the interval is a minute away
    assert (ids_on_disk(path), w.pending, w.stored, w.commits) == ([], 9, 0, 0)
    w.add([row("m9")])  # the tenth row: committed at once
    assert ids_on_disk(path) == list(range(1, 11))
    assert (w.pending, w.stored, w.commits, w.entries, w.next_id) == (0, 10, 1, 10, 11)
    w.add([row(f"n{i}") for i in range(25)])  # one add over the batch: all of it in one commit
    assert ids_on_disk(path) == list(range(1, 36))
    assert (w.stored, w.commits) == (35, 2)


def test_rows_are_committed_when_commit_interval_is_due(path: Path, open_writer: Any) -> None:
    w = open_writer(commit_batch=1000)
    w.add([row("a"), row("b")])
    assert 50 < w.due_in() <= NEVER_MS / 1000
    w.service()
    assert ids_on_disk(path) == []
    w.cfg = replace(w.cfg, commit_interval_ms=1)  # as a reload would
    wait_for(lambda: w.due_in() == 0.0, 2.0, "the commit to fall due")
    w.service()
    assert ids_on_disk(path) == [1, 2]
    assert (w.pending, w.commits) == (0, 1)


def test_a_full_statement_is_inserted_before_the_commit(path: Path, open_writer: Any) -> None:
    # 256 rows make one INSERT into the open transaction; other connections see none until the commit.
    w = open_writer(commit_batch=1000)
    w.add([row(f"m{i}") for i in range(300)])
    assert w._in_tx and w.pending == 300
    assert ids_on_disk(path) == []
    w.commit()
    assert ids_on_disk(path) == list(range(1, 301))


def test_close_commits_what_is_pending(path: Path) -> None:
    w = Writer(str(path), make_cfg(commit_batch=1000))
    w.add([row("last words")])
    w.close()
    assert ids_on_disk(path) == [1]
    assert w.stored == 1


def test_ids_continue_across_reopen(path: Path) -> None:
    w = Writer(str(path), make_cfg())
    w.add([row("a"), row("b"), row("c")])
    w.close()
    w = Writer(str(path), make_cfg())
    try:
        assert (w.next_id, w.entries, w.stored) == (4, 3, 0)
        w.add([row("d")])
        w.commit()
    finally:
        w.close()
    assert ids_on_disk(path) == [1, 2, 3, 4]


def test_ids_stay_monotonic_after_retention_emptied_the_store(path: Path) -> None:
    w = Writer(str(path), make_cfg(max_age_s=60.0))
    w.add([row("old", t=time.time() - 600)] * 5)
    w.commit()
    w.service()  # retention: all five are past max_age_s
    assert (ids_on_disk(path), w.next_id) == ([], 6)
    w.close()
    w = Writer(str(path), make_cfg(max_age_s=60.0))
    try:
        w.add([row("new")])
        w.commit()
    finally:
        w.close()
    assert ids_on_disk(path) == [6]  # id 1 again would make after_id=5 skip it


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


def test_row_round_trip(path: Path, open_writer: Any, reader: Reader) -> None:
    w = open_writer()
    t = 1_790_000_000.25
    entry = LogEntry(
        3,
        19,
        "app",
        42,
        "host1",
        "ID7",
        "2026-11-27T10:00:00Z",
        {"ex@1": {"a": "b"}},
        {"k": [1, "two"], "ü": "ß"},
        "héllo",
        "rfc5424",
        False,
    )
    w.add([Received(t, entry, True, 4321, 1000, 1001, "myprog", "myprog.service")])
    w.commit()
    assert reader.query(Filters()) == [
        {
            "id": 1,
            "time": t,
            "timestamp": "2026-11-27T10:00:00Z",
            "priority": 3,
            "facility": 19,
            "ident": "app",
            "pid": 42,
            "hostname": "host1",
            "msgid": "ID7",
            "structured_data": {"ex@1": {"a": "b"}},
            "fields": {"k": [1, "two"], "ü": "ß"},
            "message": "héllo",
            "format": "rfc5424",
            "truncated": True,
            "sender_pid": 4321,
            "sender_uid": 1000,
            "sender_gid": 1001,
            "sender_comm": "myprog",
            "sender_unit": "myprog.service",
        }
    ]


def _put(key: str) -> Any:
    def op(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO kv (key, value, version, set_at) VALUES (?, '1', 1, 0)", (key,))
        return f"put {key}"

    return op


def _put_then_fail(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO kv (key, value, version, set_at) VALUES ('half', '1', 1, 0)")
    raise ValueError("conflict")


def kv_keys(path: Path) -> list[str]:
    with db(path) as c:
        return [r[0] for r in c.execute("SELECT key FROM kv ORDER BY key")]


def test_on_commit_hears_the_last_id_of_each_commit(open_writer: Any) -> None:
    w = open_writer()
    got: list[int] = []
    w.on_commit = got.append
    w.add([row("one")])
    w.commit()
    assert got == [1]
    w.add([row("two", uid=7), row("three")])
    w.commit()
    assert got == [1, 3]
    w.commit()  # nothing new: no call
    assert got == [1, 3]


def test_rows_wait_in_memory_while_the_store_cannot_be_written(path: Path, open_writer: Any) -> None:
    w = open_writer(commit_batch=3, max_pending=4)
    w.conn.execute("PRAGMA query_only = ON")  # SQLite refuses every write from now on
    w.add([row("a"), row("b"), row("c")])  # due at once: the commit fails
    assert w.error == "attempt to write a readonly database"
    assert (w.pending, w.stored, w.dropped, w.failures) == (3, 0, 0, 1)
    w.add([row("d")])  # still within max_pending
    w.add([row("e"), row("f")])  # over it: refused and counted, never silently
    assert (w.pending, w.dropped) == (4, 2)
    assert ids_on_disk(path) == []
    w.conn.execute("PRAGMA query_only = OFF")  # the disk is writable again

    def recovered() -> bool:
        w.service()
        return w.error is None

    wait_for(recovered, 5.0, "the writer to retry (once a second)")
    assert ids_on_disk(path) == [1, 2, 3, 4]
    with db(path) as c:
        assert [r[0] for r in c.execute("SELECT message FROM entries ORDER BY id")] == ["a", "b", "c", "d"]
    assert (w.pending, w.stored, w.dropped, w.next_id) == (0, 4, 2, 5)


# --- retention -------------------------------------------------------------------------


def test_retention_by_count_keeps_the_newest(path: Path, open_writer: Any) -> None:
    w = open_writer(max_entries=4)
    w.add([row(f"m{i}") for i in range(10)])
    w.commit()
    w.service()  # the first service runs retention
    assert ids_on_disk(path) == [7, 8, 9, 10]
    assert (w.entries, w.deleted, w.next_id) == (4, 6, 11)
    w.add([row("m10")])
    w.commit()
    w.service()  # retention_interval_s has not passed: 5 entries for now
    assert ids_on_disk(path) == [7, 8, 9, 10, 11]


def test_retention_runs_every_retention_interval(path: Path, open_writer: Any) -> None:
    w = open_writer(max_entries=2, retention_interval_s=0.05)
    w.add([row(f"m{i}") for i in range(3)])
    w.commit()
    w.service()
    assert ids_on_disk(path) == [2, 3]
    w.add([row("m3")])
    w.commit()

    def retained() -> bool:
        w.service()
        return w.entries == 2

    wait_for(retained, 5.0, "the next retention pass")
    assert ids_on_disk(path) == [3, 4]
    assert w.deleted == 2


def test_retention_by_age_uses_receive_time(path: Path, open_writer: Any) -> None:
    now = time.time()
    w = open_writer(max_age_s=60.0)
    w.add(
        [row("old", t=now - 100)] * 3
        + [row("older than it looks", t=now - 61)]
        + [row("young", t=now - 50)] * 2
        + [row("new", t=now)]
    )
    w.commit()
    w.service()
    assert ids_on_disk(path) == [5, 6, 7]
    assert (w.entries, w.deleted) == (3, 4)


def test_retention_by_age_off_by_default(path: Path, open_writer: Any) -> None:
    w = open_writer()
    assert w.cfg.max_age_s == 0.0
    w.add([row("ancient", t=1.0)])
    w.commit()
    w.service()
    assert ids_on_disk(path) == [1]


def test_retention_by_bytes_removes_the_oldest_share(path: Path, open_writer: Any) -> None:
    max_bytes = 200_000
    w = open_writer(max_bytes=max_bytes)
    w.add([row(f"{i:04d} " + "x" * 1000) for i in range(400)])
    w.commit()
    used = w.retention.used_bytes()
    assert used > 2 * max_bytes
    # The oldest share that brings the store to 90% of the limit (retention.Retention._over_bytes).
    expected = int(400 * (used - 0.9 * max_bytes) / used)
    w.service()
    kept = ids_on_disk(path)
    first = 401 - len(kept)
    assert kept == list(range(first, 401))  # the newest, as one run
    # At least that share; more when a look after it finds the store still over
    # (every table and index holds at least one page, whatever it stores).
    assert expected <= first - 1 < 400
    assert (w.entries, w.deleted) == (len(kept), first - 1)
    assert w.retention.used_bytes() <= max_bytes


def test_retention_by_bytes_under_the_limit_deletes_nothing(path: Path, open_writer: Any) -> None:
    w = open_writer(max_bytes=10 * 1024 * 1024)
    w.add([row("small")] * 20)
    w.commit()
    w.service()
    assert (w.entries, w.deleted) == (20, 0)


# --- reading: Reader and Filters -----------------------------------------------------

T0 = 1_790_000_000.0
# (message, priority, ident, sender pid, sender uid, time offset)
CORPUS = [
    ("boot ok", 6, "init", 1, 0, 0),
    ("Disk ERROR on sda", 3, "kernel", 2, 0, 10),
    ("disk error on sdb", 3, "kernel", 2, 0, 20),
    ("user login", 5, "sshd", 300, 1000, 30),
    ("user logout", 5, "sshd", 301, 1000, 40),
    ("panic: nothing", 0, "kernel", 2, 0, 50),
    ("cron ran", 6, "cron", 400, 0, 60),
    ("Cron failed", 4, "cron", 401, 1001, 70),
    ("debug chatter", 7, "app", 500, 1000, 80),
    ("alert: disk full", 1, None, 600, 0, 90),
]


@pytest.fixture
def corpus(open_writer: Any) -> list[tuple[Any, ...]]:
    """CORPUS stored; returns the stored rows (COLUMNS order), for `Filters.matches`."""
    w = open_writer()
    w.add([row(m, prio=p, ident=i, spid=pid, uid=uid, t=T0 + dt_s) for m, p, i, pid, uid, dt_s in CORPUS])
    w.commit()
    with db(w.path) as c:
        return c.execute(f"SELECT {', '.join(COLUMNS)} FROM entries ORDER BY id").fetchall()


def test_query_newest_limit_and_paging_forward(corpus: list[Any], reader: Reader) -> None:
    def ids(**kw: Any) -> list[int]:
        return [e["id"] for e in reader.query(Filters(**kw))]

    assert ids() == list(range(1, 11))
    assert ids(limit=3) == [8, 9, 10]  # the newest, in id order
    assert ids(limit=4, after_id=0) == [1, 2, 3, 4]  # the oldest after the id
    assert ids(limit=4, after_id=4) == [5, 6, 7, 8]
    assert ids(limit=4, after_id=8) == [9, 10]
    assert ids(limit=4, after_id=10) == []
    assert ids(limit=2, after_id=3, idents=("kernel",)) == [6]
    assert ids(limit=1, idents=("kernel",)) == [6]
    assert ids(limit=5, after_id=1, since=T0 + 45) == [6, 7, 8, 9, 10]
    assert ids(limit=5, after_id=7, until=T0 + 45) == []


FILTERS = [
    (Filters(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    (Filters(priority=(0, 3)), [2, 3, 6, 10]),
    (Filters(priority=(0, 0)), [6]),
    (Filters(priority=(3, 5)), [2, 3, 4, 5, 8]),
    (Filters(priority=(6, 7)), [1, 7, 9]),
    (Filters(idents=("kernel",)), [2, 3, 6]),
    (Filters(idents=("kernel", "cron")), [2, 3, 6, 7, 8]),
    (Filters(idents=("nobody",)), []),
    (Filters(pid=2), [2, 3, 6]),
    (Filters(uid=1000), [4, 5, 9]),
    (Filters(uid=1000, priority=(0, 5)), [4, 5]),
    (Filters(since=T0 + 30), [4, 5, 6, 7, 8, 9, 10]),
    (Filters(until=T0 + 30), [1, 2, 3, 4]),
    (Filters(since=T0 + 15, until=T0 + 55), [3, 4, 5, 6]),
    (Filters(since=T0 + 91), []),
    (Filters(until=T0 - 1), []),
    (Filters(since=T0 + 55, until=T0 + 15), []),
    (Filters(grep="disk"), [2, 3, 10]),
    (Filters(grep="Disk"), [2]),
    (Filters(grep="^cron"), [7, 8]),
    (Filters(grep="Cron|panic"), [6, 8]),
    (Filters(grep="log(in|out)", uid=1000, priority=(0, 5), since=T0 + 35), [5]),
    (Filters(priority=(0, 6), limit=2), [8, 10]),
]


def _short(f: Filters) -> str:
    return ",".join(f"{k}={v}" for k, v in vars(f).items() if v is not None and (k, v) != ("limit", 100)) or "none"


@pytest.mark.parametrize(("f", "ids"), FILTERS, ids=[_short(f) for f, _ in FILTERS])
def test_filters(f: Filters, ids: list[int], corpus: list[Any], reader: Reader) -> None:
    assert [e["id"] for e in reader.query(f)] == ids


@pytest.mark.parametrize(
    ("grep", "ids"),
    [
        ("disk", [2, 3, 10]),
        ("DISK", []),
        ("Disk", [2]),
        ("error", [2, 3]),
        ("ERROR", [2]),
        ("cron", [7, 8]),
        ("Cron", [8]),
        (r"\d", []),
        (r"sd[ab]$", [2, 3]),
    ],
)
def test_grep_is_smart_case(grep: str, ids: list[int], corpus: list[Any], reader: Reader) -> None:
    # Case-insensitive unless the pattern has a capital letter, as journalctl -g.
    assert [e["id"] for e in reader.query(Filters(grep=grep))] == ids


def test_make_filters_from_params() -> None:
    now = 1_790_000_000.0
    f = make_filters(
        {
            "since": "-5m",
            "until": 1_790_000_100,
            "priority": "warning",
            "ident": "a",
            "pid": 9,
            "uid": 5,
            "grep": "x",
            "limit": 7,
            "after_id": 3,
        },
        now,
    )
    assert f == Filters(
        since=now - 300,
        until=1_790_000_100.0,
        priority=(0, 4),
        idents=("a",),
        pid=9,
        uid=5,
        grep="x",
        limit=7,
        after_id=3,
    )
    assert make_filters({"priority": 2}, now).priority == (0, 2)
    assert make_filters({}, now) == Filters(limit=100)
    assert make_filters({"uid": 0}, now, forced_uid=1000).uid == 1000  # a non-admin sees its own only
    with pytest.raises(ValueError, match="grep: bad regular expression: missing \\): \\(unclosed \\(RE2 syntax\\)"):
        make_filters({"grep": "(unclosed"}, now)
    with pytest.raises(ValueError, match="not a priority"):
        make_filters({"priority": "loud"}, now)
    with pytest.raises(ValueError, match="not a time"):
        make_filters({"since": "soonish"}, now)


def test_reader_connections_are_read_only(corpus: list[Any], reader: Reader) -> None:
    with reader.session(Filters(), 5.0) as db, pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("DELETE FROM entries")
    assert len(reader.query(Filters())) == 10


# --- parse_time --------------------------------------------------------------------


@pytest.fixture
def berlin() -> Iterator[None]:
    """Local time with DST: CET/CEST, written as a POSIX TZ rule (no tzdata needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "CET-1CEST,M3.5.0,M10.5.0/3"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_790_000_000, 1_790_000_000.0),
        (1.5, 1.5),
        ("@1790000000", 1_790_000_000.0),  # as systemd.time(7): what a command line can pass
        ("@1790000000.25", 1_790_000_000.25),
        ("20261127", utc(2026, 11, 26, 23)),  # ISO 8601 basic format, not epoch seconds
        ("now", utc(2026, 6, 15, 12)),
        ("-5m", utc(2026, 6, 15, 11, 55)),
        ("-5 min", utc(2026, 6, 15, 11, 55)),
        ("-30s", utc(2026, 6, 15, 11, 59, 30)),
        ("+1h", utc(2026, 6, 15, 13)),
        ("-2 days", utc(2026, 6, 13, 12)),
        ("-1w", utc(2026, 6, 8, 12)),
        ("-1.5h", utc(2026, 6, 15, 10, 30)),
        ("today", utc(2026, 6, 14, 22)),  # local midnight, CEST
        ("Yesterday", utc(2026, 6, 13, 22)),
        ("tomorrow", utc(2026, 6, 15, 22)),
        ("10:00", utc(2026, 6, 15, 8)),
        ("10:00:30", utc(2026, 6, 15, 8, 0, 30)),
        ("2026-11-27 10:00", utc(2026, 11, 27, 9)),  # naive means local time: CET in November
        ("2026-11-27T10:00:00", utc(2026, 11, 27, 9)),
        ("2026-11-27", utc(2026, 11, 26, 23)),
        ("2026-11-27T10:00:00Z", utc(2026, 11, 27, 10)),
        ("2026-11-27T10:00:00+05:00", utc(2026, 11, 27, 5)),
        ("  2026-11-27 10:00  ", utc(2026, 11, 27, 9)),
    ],
)
def test_parse_time(berlin: None, value: Any, expected: float) -> None:
    assert parse_time(value, utc(2026, 6, 15, 12)) == expected


@pytest.mark.parametrize(
    ("now", "value", "expected"),
    [
        # 2026-03-29: DST begins at 02:00; midnight was still CET (+01:00).
        (utc(2026, 3, 29, 12), "today", utc(2026, 3, 28, 23)),
        (utc(2026, 3, 29, 12), "yesterday", utc(2026, 3, 27, 23)),
        (utc(2026, 3, 29, 12), "tomorrow", utc(2026, 3, 29, 22)),
        (utc(2026, 3, 30, 12), "yesterday", utc(2026, 3, 28, 23)),
        # 2026-10-25: DST ends at 03:00; midnight was still CEST (+02:00).
        (utc(2026, 10, 25, 12), "today", utc(2026, 10, 24, 22)),
        (utc(2026, 10, 26, 12), "yesterday", utc(2026, 10, 24, 22)),
        (utc(2026, 10, 24, 12), "tomorrow", utc(2026, 10, 24, 22)),
    ],
)
def test_parse_time_midnight_across_dst(berlin: None, now: float, value: str, expected: float) -> None:
    # journalctl --since today means local midnight, whatever the offset is at noon.
    assert parse_time(value, now) == expected


@pytest.mark.parametrize(
    "value", ["soon", "", "-5", "5m", "-5 fortnights", "2026-13-01", "25:00", "@", "@-5", "@1e9", None, True, [1]]
)
def test_parse_time_rejects(value: Any) -> None:
    with pytest.raises(ValueError) as exc:
        parse_time(value, 0.0)
    if isinstance(value, str):
        assert (
            str(exc.value) == f"not a time: {value!r} (try 2026-11-27 10:00, -5m, 2h ago, today, yesterday, or @EPOCH)"
        )
    else:
        assert str(exc.value) == "must be epoch seconds or a time string"


# --- RateLimiter -------------------------------------------------------------------


def run_limiter(rl: RateLimiter, key: Any, prios: list[int], now: float) -> list[tuple[bool, int]]:
    return [rl.check(key, p, now) for p in prios]


def test_rate_limit_burst_passes_and_the_next_is_suppressed() -> None:
    rl = RateLimiter(burst=3, interval_s=10.0)
    assert run_limiter(rl, "k", [5, 5, 5], 100.0) == [(True, 0)] * 3
    assert rl.check("k", 5, 100.5) == (False, 0)
    assert rl.check("k", 6, 109.99) == (False, 0)
    assert rl.suppressed_total == 2
    # The window ends at 110: the next message passes and reports the 2 once.
    assert rl.check("k", 5, 110.0) == (True, 2)
    assert run_limiter(rl, "k", [5, 5, 5], 110.0) == [(True, 0), (True, 0), (False, 0)]
    assert rl.check("k", 5, 125.0) == (True, 1)
    assert rl.suppressed_total == 3


def test_rate_limit_crit_and_above_have_a_bucket_of_their_own_four_times_the_burst() -> None:
    rl = RateLimiter(burst=2, interval_s=10.0)
    assert run_limiter(rl, "k", [5, 5, 3], 0.0) == [(True, 0), (True, 0), (False, 0)]
    # The others' burst is spent: crit and above still pass, up to 4 x 2 of them ...
    assert run_limiter(rl, "k", [2, 1, 0, 2, 2, 2, 1, 0], 1.0) == [(True, 0)] * 8
    # ... and a flood of "emergencies" is limited too.
    assert run_limiter(rl, "k", [0, 2], 1.5) == [(False, 0), (False, 0)]
    assert rl.check("k", 4, 2.0) == (False, 0)
    assert rl.check("k", 2, 10.0) == (True, 4)  # a crit message also brings the report


def test_rate_limit_chatter_never_uses_up_the_crit_bucket() -> None:
    rl = RateLimiter(burst=3, interval_s=10.0)
    assert sum(ok for ok, _ in run_limiter(rl, "k", [6] * 1000, 0.0)) == 3
    assert run_limiter(rl, "k", [2] * 12, 0.5) == [(True, 0)] * 12


def test_rate_limit_crit_opening_a_window_takes_no_share_of_the_burst() -> None:
    rl = RateLimiter(burst=2, interval_s=10.0)
    assert run_limiter(rl, "k", [2, 5, 5, 5], 0.0) == [(True, 0), (True, 0), (True, 0), (False, 0)]


def test_rate_limit_is_per_key() -> None:
    rl = RateLimiter(burst=1, interval_s=10.0)
    assert [rl.check(k, 5, 0.0) for k in ("a", "b", (0, "x"), (0, "y"), "a", "b")] == [
        (True, 0),
        (True, 0),
        (True, 0),
        (True, 0),
        (False, 0),
        (False, 0),
    ]
    assert len(rl) == 4


def test_rate_limit_sweep_reports_ended_windows_once() -> None:
    rl = RateLimiter(burst=1, interval_s=10.0)
    run_limiter(rl, "quiet", [5], 0.0)
    run_limiter(rl, "loud", [5, 5, 5, 5], 0.0)
    run_limiter(rl, "late", [5, 5], 5.0)
    assert rl.sweep(9.99) == []
    assert rl.sweep(10.0) == [("loud", 3)]  # "quiet" is forgotten without a report
    assert len(rl) == 1
    assert rl.sweep(10.0) == []
    assert rl.check("loud", 5, 10.0) == (True, 0)  # already reported: not twice
    assert rl.sweep(15.0) == [("late", 1)]


def test_rate_limit_clock_going_back_starts_a_new_window() -> None:
    rl = RateLimiter(burst=1, interval_s=10.0)
    run_limiter(rl, "k", [5, 5], 100.0)
    assert rl.check("k", 5, 50.0) == (True, 1)


def test_rate_limit_burst_0_is_off_and_configure_applies() -> None:
    rl = RateLimiter(burst=0, interval_s=10.0)
    assert run_limiter(rl, "k", [7] * 1000, 0.0) == [(True, 0)] * 1000
    assert len(rl) == 0
    rl.configure(2, 1.0)
    assert run_limiter(rl, "k", [7, 7, 7], 0.0) == [(True, 0), (True, 0), (False, 0)]
    assert rl.check("k", 7, 1.0) == (True, 1)  # the new interval


def test_a_row_that_cannot_be_bound_is_skipped_and_counted(path: Path, open_writer: Any) -> None:
    w = open_writer()
    bad = LogEntry(5, 1, "tag", None, None, None, None, None, None, "lone \ud800 surrogate", "json", False)
    rows = [row("before"), Received(time.time(), bad, False, 1, 0, 0, "x", None), row("after")]
    w.add(rows)
    assert w.commit() is True
    assert (w.stored, w.unstorable, w.entries) == (2, 1, 2)
    with db(path) as c:
        got = c.execute("SELECT id, message FROM entries ORDER BY id").fetchall()
    assert got == [(1, "before"), (3, "after")]  # the bad row's id stays unused
    w.add([row("next")])
    w.commit()
    assert ids_on_disk(path) == [1, 3, 4]


# --- fair retention (DESIGN.md "Log socket"; issue #10 item 6) ---------------------------


def test_fair_levels_cut_only_who_holds_more_than_the_level() -> None:
    assert fair_levels({1: 100, 2: 10, 3: 5}, 60) == {1: 55}  # 45 + 10 + 5 = 60
    assert fair_levels({1: 50, 2: 50}, 60) == {1: 20, 2: 20}
    assert fair_levels({1: 10, 2: 10}, 100) == {}
    assert fair_levels({1: 30, 2: 30, 3: 1}, 31) == {1: 15, 2: 15}
    assert fair_levels({}, 10) == {}


def test_a_flood_from_one_uid_pushes_out_only_its_own_entries(path: Path, open_writer: Any) -> None:
    w = open_writer(max_entries=100)
    w.add([row(f"victim {i}", uid=1000) for i in range(40)])
    w.add([row(f"flood {i}", uid=2000, prio=2) for i in range(500)])  # crit, after the victim's
    w.commit()
    w.service()
    with db(path) as c:
        kept = dict(c.execute("SELECT sender_uid, count(*) FROM entries GROUP BY sender_uid").fetchall())
        newest_flood = c.execute("SELECT min(message) FROM entries WHERE sender_uid = 2000").fetchone()[0]
    assert kept == {1000: 40, 2000: 60}  # the victim keeps all it had; the flood its newest 60
    assert w.entries == 100 and w.retention.rows == {1000: 40, 2000: 60}
    assert newest_flood.startswith("flood 4")  # the oldest of the flood went first
    # Reopened, the counts are read back from the store.
    w.close()
    w2 = open_writer(max_entries=100)
    assert w2.retention.rows == {1000: 40, 2000: 60}


def test_fair_retention_by_bytes_spares_the_small_sender(path: Path, open_writer: Any) -> None:
    w = open_writer(max_bytes=300_000)
    w.add([row(f"small {i}", uid=1000) for i in range(20)])
    w.add([row(f"{i:04d} " + "x" * 2000, uid=2000) for i in range(400)])
    w.commit()
    w.service()
    with db(path) as c:
        kept = dict(c.execute("SELECT sender_uid, count(*) FROM entries GROUP BY sender_uid").fetchall())
    assert kept[1000] == 20 and kept[2000] < 400
    assert w.retention.used_bytes() <= 300_000
