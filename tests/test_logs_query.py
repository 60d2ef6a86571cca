"""`ipcd.logs.query`, the `Reader`, without a daemon: id and time bounds, deadlines, reply size, stored JSON.

Everything runs on a real SQLite store written by the real `Writer` (`helpers_reader`).
"""

from __future__ import annotations

import json
import random
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from helpers_reader import T0, big, ids, path, reader, row, store

from ipcd.errors import LimitReached
from ipcd.logs.filters import Filters
from ipcd.logs.query import MAX_ID, Reader, time_to_id

__all__ = ["big", "path", "reader", "store"]  # the helpers' fixtures (the tests here use them, or their fixtures do)


# --- ids and time ---------------------------------------------------------------------------------


def test_id_bounds_at_the_edges(store: Any, reader: Reader) -> None:
    store([row(f"m{i}") for i in range(10)])
    q = reader.query
    assert ids(q(Filters(after_id=MAX_ID))) == []
    assert ids(q(Filters(before_id=0))) == []
    assert ids(q(Filters(before_id=1))) == []
    assert ids(q(Filters(before_id=MAX_ID))) == list(range(1, 11))
    assert ids(q(Filters(before_id=8, limit=3))) == [5, 6, 7]  # the newest below it, in id order
    assert ids(q(Filters(after_id=2, before_id=8, limit=3))) == [3, 4, 5]  # with after_id, the oldest
    assert ids(q(Filters(after_id=7, before_id=8))) == []
    assert ids(q(Filters(after_id=0, limit=1))) == [1]


def test_time_bounds_by_binary_search_over_ids(path: Path, store: Any, reader: Reader) -> None:
    rnd = random.Random(7)
    t, rows = T0, []
    for i in range(3000):
        t += rnd.choice((0.0, 0.0, 0.5, 1.0, 7.25))  # equal times, small and large steps
        rows.append(row(f"m{i}", t=t))
    store(rows)
    with sqlite3.connect(path) as c:  # retention leaves gaps, and whole runs of ids gone
        c.execute("DELETE FROM entries WHERE id % 7 = 0 OR id BETWEEN 1000 AND 1500 OR id <= 20")
    with sqlite3.connect(path) as c:
        stored = c.execute("SELECT id, time FROM entries ORDER BY id").fetchall()
    times = sorted({t for _, t in stored})
    probes = [T0 - 1, stored[0][1], stored[-1][1], stored[-1][1] + 1, *rnd.sample(times, 40)]
    probes += [p + d for p in rnd.sample(times, 20) for d in (-0.1, 0.1)]
    for since in probes:
        until = since + rnd.choice((0, 3, 50, 10_000))
        want = [i for i, t in stored if since <= t <= until]
        assert ids(reader.query(Filters(since=since, until=until, limit=10_000))) == want, (since, until)
        assert ids(reader.query(Filters(since=since, limit=5))) == [i for i, t in stored if t >= since][-5:]
        assert ids(reader.query(Filters(until=until, after_id=0, limit=5))) == [i for i, t in stored if t <= until][:5]
    with reader.session(Filters(), 5.0) as db:
        assert time_to_id(db, T0 - 1, after=False) == stored[0][0]
        assert time_to_id(db, stored[-1][1], after=True) == stored[-1][0] + 1
        probes_run = []
        db.set_trace_callback(probes_run.append)
        time_to_id(db, times[len(times) // 2], after=False)
        db.set_trace_callback(None)
        assert len(probes_run) <= 2 + 13  # first, last, then log2(3000) rowid lookups


def test_time_bounds_on_an_empty_store(reader: Reader) -> None:
    assert reader.query(Filters(since=T0, until=T0 + 5)) == []


# --- deadline -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "timeout_s"),
    [
        (Filters(grep="(a+)+$"), 0.02),  # stopped by the grep function
        (Filters(pid=4242), 0.001),  # no grep: stopped by SQLite's progress handler
    ],
)
def test_query_stops_at_its_deadline(big: int, reader: Reader, f: Filters, timeout_s: float) -> None:
    with pytest.raises(LimitReached) as e:
        reader.query_json(f, timeout_s, 8 << 20)
    assert e.value.code == -32002 and e.value.data == {"limit": "query_timeout_s", "value": timeout_s}
    assert f"query took longer than query_timeout_s = {timeout_s:g} s" in e.value.message
    # The connection goes back to the pool clean: the next query on it is answered.
    assert ids(reader.query(Filters(limit=2), 5.0)) == [big - 1, big]
    assert ids(reader.query(Filters(grep="(a+)+$", since=T0 + 199.9), 5.0)) == []


def test_pool_keeps_room_for_other_uids(path: Path, store: Any) -> None:
    store([row("m")])
    r = Reader(str(path), size=4)  # a non-admin uid may hold two at once
    try:
        with r.session(Filters(), 5.0, uid=1000), r.session(Filters(), 5.0, uid=1000):
            with pytest.raises(LimitReached, match="query_timeout_s"):
                r.query(Filters(), 0.05, uid=1000)  # waiting for the pool counts against the deadline
            assert len(r.query(Filters(), 1.0, uid=1001)) == 1
            assert len(r.query(Filters(), 1.0)) == 1  # an admin's call
        assert len(r.query(Filters(), 1.0, uid=1000)) == 1
    finally:
        r.close()


# --- reply size and stored JSON -------------------------------------------------------------------


def test_reply_size_limit_at_its_edge(store: Any, reader: Reader) -> None:
    store([row("x" * 1000 + "é" * 500) for _ in range(20)])
    whole = reader.query_json(Filters(), 5.0, 1 << 30)
    size = len(whole.encode())
    assert json.loads(whole)["entries"] == reader.query(Filters())
    assert reader.query_json(Filters(), 5.0, size) == whole
    with pytest.raises(LimitReached) as e:
        reader.query_json(Filters(), 5.0, size - 1)
    assert e.value.code == -32002 and e.value.data == {"limit": "max_queued_bytes_per_connection", "value": size - 1}


def test_a_large_result_is_refused_before_it_is_built(store: Any, reader: Reader) -> None:
    for _ in range(10):
        store([row("y" * 65000) for _ in range(200)])  # 2000 entries of 64 KiB: 130 MB as a reply
    cap = 8 << 20
    tracemalloc.start()
    try:
        with pytest.raises(LimitReached, match="max_queued_bytes_per_connection"):
            reader.query_json(Filters(limit=2000), 5.0, cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * cap, peak


def test_stored_json_that_cannot_be_decoded_is_kept_as_a_string(path: Path, store: Any, reader: Reader) -> None:
    store([row("deep"), row("bad"), row("fine")])
    deep = "[" * 100_000 + "]" * 100_000
    with sqlite3.connect(path) as c:
        c.execute("UPDATE entries SET fields = ? WHERE id = 1", (deep,))
        c.execute("UPDATE entries SET structured_data = ? WHERE id = 2", ('{"broken": ',))
        c.execute("UPDATE entries SET fields = ? WHERE id = 3", ('{"k": [1, 2]}',))
    entries = reader.query(Filters())
    assert [e["fields"] for e in entries] == [deep, None, {"k": [1, 2]}]
    assert entries[1]["structured_data"] == '{"broken": '
    assert json.loads(reader.query_json(Filters(), 5.0, 8 << 20))["entries"] == entries
