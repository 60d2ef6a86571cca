"""`ipcd.logs.writer`: batching, commit timing, ids, rows in and out, a store that cannot be written.

Real SQLite files in a temporary directory; the test drives the writer
(`helpers_writer`), so every step is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from helpers_writer import NEVER_MS, db, ids_on_disk, make_cfg, open_writer, path, reader, row

from ipcd.logs.filters import Filters
from ipcd.logs.query import Reader
from ipcd.logs.writer import CHUNKS, ROW_OVERHEAD, Received, Writer
from ipcd.wire.logparse import LogEntry

__all__ = ["open_writer", "path", "reader"]  # the helpers' fixtures (the tests here use them, or their fixtures do)


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


def test_rows_go_into_the_open_transaction_once_a_whole_chunk_waits(path: Path, open_writer: Any) -> None:
    # Fewer than CHUNKS[0] rows wait for the commit (a burst goes in as few statements);
    # at CHUNKS[0] they go into the open transaction, which other connections do not see.
    w = open_writer(commit_batch=10_000)
    w.add([row(f"m{i}") for i in range(CHUNKS[0] - 1)])
    assert not w._in_tx and w.pending == CHUNKS[0] - 1
    w.add([row("last")])
    assert w._in_tx and w.pending == CHUNKS[0]
    assert ids_on_disk(path) == []
    w.commit()
    assert ids_on_disk(path) == list(range(1, CHUNKS[0] + 1))


@pytest.mark.parametrize("n", [1, 3, 4, 5, CHUNKS[0] - 1, CHUNKS[0], CHUNKS[0] + 1, sum(CHUNKS), 2 * sum(CHUNKS) + 7])
def test_every_row_lands_once_in_order_whatever_the_chunks(path: Path, open_writer: Any, n: int) -> None:
    # Three statements' rows (no unit, a unit, structured fields), interleaved, each cut into chunks.
    w = open_writer(commit_batch=100_000)
    kinds = [{}, {"unit": "u.service"}, {"fields": {"k": 1}}]
    w.add([row(f"m{i}", **kinds[i % 3]) for i in range(n)])
    w.commit()
    with db(path) as c:
        got = c.execute("SELECT id, message, sender_unit, fields FROM entries ORDER BY id").fetchall()
    want = [(i + 1, f"m{i}", "u.service" if i % 3 == 1 else None, '{"k": 1}' if i % 3 == 2 else None) for i in range(n)]
    assert got == want
    assert (w.stored, w.entries, w.pending) == (n, n, 0)


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


def test_rows_waiting_for_a_failing_store_are_bounded_in_bytes_at_the_edge(open_writer: Any) -> None:
    # #10 item 11: on a full disk, up to 100,000 pending 64 KiB entries (6.4 GB) could wait in memory.
    w = open_writer(commit_batch=1, max_pending=100_000, max_pending_bytes=1 << 20)
    w.conn.execute("PRAGMA query_only = ON")
    message = "x" * (4096 - ROW_OVERHEAD)  # 4 KiB a row, by the estimate (a row costs about that: see writer)
    for _ in range(300):
        w.add([row(message)])
    assert w.error is not None
    assert (w.pending, w.pending_bytes, w.dropped) == (256, 1 << 20, 44)


def test_rows_in_the_open_transaction_are_committed_at_max_pending_bytes(path: Path, open_writer: Any) -> None:
    # Not only at commit_batch rows: 10000 rows of 64 KiB would be 640 MB waiting for the commit.
    w = open_writer(commit_batch=10_000, max_pending_bytes=1 << 20)
    message = "x" * (4096 - ROW_OVERHEAD)
    for _ in range(255):
        w.add([row(message)])
    assert (w.pending, w.stored) == (255, 0)
    w.add([row(message)])  # 1 MiB by the estimate: committed at once
    assert (w.pending, w.stored) == (0, 256)
    assert len(ids_on_disk(path)) == 256


def test_a_row_that_cannot_be_bound_in_a_later_chunk_costs_only_itself(path: Path, open_writer: Any) -> None:
    # The chunks before it are in the open transaction already; the rest go in one by one.
    w = open_writer(commit_batch=100_000)
    bad = LogEntry(5, 1, "tag", None, None, None, None, None, None, "lone \ud800 surrogate", "json", False)
    n, at = 2 * CHUNKS[0] + 10, CHUNKS[0] + 20
    rows = [row(f"m{i}") for i in range(n)]
    rows[at] = Received(time.time(), bad, False, 1, 0, 0, "x", None)
    w.add(rows)
    assert w.commit() is True
    assert ids_on_disk(path) == [i + 1 for i in range(n) if i != at]
    assert (w.stored, w.unstorable, w.entries) == (n - 1, 1, n - 1)


# --- retention -------------------------------------------------------------------------


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
