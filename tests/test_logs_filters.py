"""`ipcd.logs.filters`: what a `Filters` selects, read from method params; `parse_time` with an injected clock.

A corpus of ten entries is stored by the real `Writer` and read by the real
`Reader`; times are the corpus's own or passed in (`parse_time(value, now)`).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers_writer import db, open_writer, path, reader, row

from ipcd.logs.filters import Filters, make_filters, parse_priority, parse_time
from ipcd.logs.query import Reader
from ipcd.logs.store import COLUMNS

__all__ = ["open_writer", "path", "reader"]  # the helpers' fixtures (the tests here use them, or their fixtures do)


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


# --- params ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "levels"),
    [
        (3, (0, 3)),
        ("err", (0, 3)),
        ("warning..err", (3, 4)),
        ("err..warning", (3, 4)),
        ("err..", (3, 7)),
        ("..err", (0, 3)),
        ("0..7", (0, 7)),
        ("debug..debug", (7, 7)),
    ],
)
def test_priority_levels_and_ranges(value: Any, levels: tuple[int, int]) -> None:
    assert parse_priority(value) == levels


@pytest.mark.parametrize("value", ["..", "loud..err", "err..8", 8, -1, "err...warning"])
def test_priority_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_priority(value)


def test_make_filters_names_and_bounds() -> None:
    f = make_filters({"ident": ["a", "b", "a"], "unit": "x.service", "before_id": 9}, T0)
    assert (f.idents, f.units, f.before_id) == (("a", "b"), ("x.service",), 9)
    assert make_filters({"ident": ["i"] * 64}, T0).idents == ("i",)
    for params, message in (
        ({"ident": [f"i{n}" for n in range(65)]}, "ident: at most 64 names, got 65"),
        ({"unit": []}, "unit: must not be an empty list"),
        ({"unit": ["a", 1]}, "unit: must be a string or a list of strings"),
        ({"ident": "x" * 1025}, "ident: a name longer than 1024 characters"),
        ({"grep": "a{4294967296}"}, "grep: bad regular expression"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            make_filters(params, T0)


# --- parse_time -----------------------------------------------------------------------------------


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


def test_parse_time_far_dates_are_refused_not_crashed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "EST5")  # UTC-5, as POSIX TZ: no tzdata needed
    time.tzset()
    try:
        # The last local second whose UTC time datetime can hold, and the next one.
        assert parse_time("9999-12-31T18:59:59", 0.0) == 253402300799.0
        for value in ("9999-12-31T19:00:00", "9999-12-31T23:59:59", "@" + "9" * 15 + "9", "-99999999999999 days"):
            with pytest.raises(ValueError, match="not a time"):
                parse_time(value, 0.0)
        assert parse_time("2h ago", 7200.0) == 0.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
