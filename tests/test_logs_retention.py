"""`ipcd.logs.retention`: by count, age and bytes, fair between uids; on a store the test drives, then in a real ipcd."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Ipcd, wait_for
from helpers_logs import NO_LIMIT, db_rows, query, send, status, wait_stored
from helpers_writer import db, ids_on_disk, open_writer, path, reader, row

from ipcd.logs.retention import fair_levels

__all__ = ["open_writer", "path", "reader"]  # the helpers' fixtures (the tests here use them, or their fixtures do)


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


# --- fair retention (DESIGN.md "Log socket"; issue #10 item 6) ------------------------------------


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


# --- against a real ipcd --------------------------------------------------------------------------


def test_retention_by_max_entries(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[store]\nmax_entries = 5\nretention_interval_s = 0.05\n").start()
    send(d, *[b"<13>ret: m%d" % i for i in range(12)])
    wait_stored(d, 12)
    wait_for(lambda: status(d)["store"]["entries"] == 5, 10, "retention down to 5 entries")
    assert [e["id"] for e in query(d)] == [8, 9, 10, 11, 12]
    assert status(d)["store"]["deleted"] == 7
    assert db_rows(d, "SELECT min(id), max(id), count(*) FROM entries") == [(8, 12, 5)]


def test_retention_by_max_bytes(make_ipcd: Callable[..., Ipcd]) -> None:
    max_bytes = 1024 * 1024
    d = make_ipcd(config=f"{NO_LIMIT}[store]\nmax_bytes = {max_bytes}\nretention_interval_s = 0.05\n").start()
    n = 3000
    for i in range(0, n, 500):
        send(d, *[b"<13>bytes: %05d " % j + b"x" * 1000 for j in range(i, i + 500)])
    wait_stored(d, n)

    def used() -> int:
        ((pages, free, size),) = db_rows(d, "SELECT * FROM pragma_page_count, pragma_freelist_count, pragma_page_size")
        return int((pages - free) * size)

    wait_for(lambda: used() <= max_bytes, 10, "retention to bring the store under max_bytes")
    ids = [r[0] for r in db_rows(d, "SELECT id FROM entries ORDER BY id")]
    assert 0 < len(ids) < n
    assert ids == list(range(n - len(ids) + 1, n + 1))  # the newest kept, no holes
    st = status(d)["store"]
    assert (st["entries"], st["deleted"]) == (len(ids), n - len(ids))


def test_retention_by_max_age(make_ipcd: Callable[..., Ipcd]) -> None:
    max_age_s = 1.0
    d = make_ipcd(config=f"[store]\nmax_age_s = {max_age_s}\nretention_interval_s = 0.02\n").start()
    send(d, b"<13>age: old one", b"<13>age: old two")
    wait_stored(d, 2)
    old_t = query(d)[-1]["time"]
    wait_for(lambda: time.time() > old_t + max_age_s / 2, 5, "the old entries to be half their max age")
    send(d, b"<13>age: young")
    wait_stored(d, 3)
    # Between the old ones' max age and the young one's, only the young one is left.
    assert wait_for(lambda: [e["message"] for e in query(d)] == ["young"], 10, "the old entries to age out")
    assert time.time() >= old_t + max_age_s
    wait_for(lambda: query(d) == [], 10, "the young entry to age out too")
    st = status(d)["store"]
    assert (st["entries"], st["deleted"]) == (0, 3)
