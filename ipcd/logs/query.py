"""Reading the log: filters, time expressions, queries, and live followers.

`Filters` is what `logs.query` and `logs.follow` take (DESIGN.md "Methods"):
since/until (epoch seconds, ISO 8601, `-5m`, `today`...), priority (that
level and more severe), ident, pid (the sender's trusted pid), uid, grep (a
regular expression; case-insensitive unless it has a capital letter, as
journalctl -g), limit, after_id.  `Reader` answers queries on a small pool
of read-only connections (WAL lets them run beside the writer); `FollowHub`
hands each committed entry to the followers whose filters match, through
their bounded stream queues, on the writer's thread.  Writing is
`writer`'s business.
"""

from __future__ import annotations

import datetime as dt
import functools
import queue
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ipcd.logs.store import COLUMNS, connect, row_dict
from ipcd.wire.priority import severity

MAX_LIMIT = 10000
_I = {name: n for n, name in enumerate(COLUMNS)}
_REL = re.compile(r"^([+-])\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hour|hours|d|day|days|w|week|weeks)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EPOCH = re.compile(r"@\d+(?:\.\d+)?")


def parse_time(value: Any, now: float) -> float:
    """Epoch seconds from a number, `@1795000000`, `now`, `today`, `yesterday`, `-5m`, or ISO 8601 (local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("must be epoch seconds or a time string")
    text = value.strip().lower()
    # Naive local time: .timestamp() then gives each date its own UTC offset, so that
    # "today" is local midnight on a day DST begins or ends (a fixed offset is not).
    local_now = dt.datetime.fromtimestamp(now)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    named = {
        "now": local_now,
        "today": midnight,
        "yesterday": midnight - dt.timedelta(days=1),
        "tomorrow": midnight + dt.timedelta(days=1),
    }
    if text in named:
        return named[text].timestamp()
    if _EPOCH.fullmatch(text):  # epoch seconds from a command line, "@" as systemd.time(7)
        return float(text[1:])
    m = _REL.match(text)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return now + sign * float(m.group(2)) * _UNIT_S[m.group(3)[0]]
    if re.fullmatch(r"\d\d:\d\d(:\d\d)?", text):
        text = f"{midnight.date().isoformat()} {text}"
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"not a time: {value!r} (try 2026-11-27 10:00, -5m, -2h, today, yesterday, or @epoch seconds)"
            ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive means local time, as journalctl --since
    return when.timestamp()


@functools.lru_cache(maxsize=64)
def compile_grep(pattern: str) -> re.Pattern[str]:
    flags = 0 if any(c.isupper() for c in pattern) else re.IGNORECASE
    return re.compile(pattern, flags)


@dataclass(frozen=True)
class Filters:
    since: float | None = None
    until: float | None = None
    priority: int | None = None
    ident: str | None = None
    pid: int | None = None
    uid: int | None = None
    grep: str | None = None
    limit: int = 100
    after_id: int | None = None
    until_id: int | None = None  # for followers: nothing past what was committed when they looked

    def where(self) -> tuple[str, list[Any]]:
        terms, args = [], []
        for sql, value in (
            ("time >= ?", self.since),
            ("time <= ?", self.until),
            ("priority <= ?", self.priority),
            ("ident = ?", self.ident),
            ("sender_pid = ?", self.pid),
            ("sender_uid = ?", self.uid),
            ("regexp(?, message)", self.grep),
        ):
            if value is not None:
                terms.append(sql)
                args.append(value)
        return (" AND ".join(terms) or "1"), args

    def matches(self, row: tuple[Any, ...]) -> bool:
        """The same test on a freshly committed row (COLUMNS order)."""
        if self.priority is not None and row[_I["priority"]] > self.priority:
            return False
        if self.ident is not None and row[_I["ident"]] != self.ident:
            return False
        if self.pid is not None and row[_I["sender_pid"]] != self.pid:
            return False
        if self.uid is not None and row[_I["sender_uid"]] != self.uid:
            return False
        t = row[_I["time"]]
        if (self.since is not None and t < self.since) or (self.until is not None and t > self.until):
            return False
        return not (self.grep is not None and not compile_grep(self.grep).search(row[_I["message"]]))


def make_filters(params: dict[str, Any], now: float, forced_uid: int | None = None) -> Filters:
    """Filters from validated method params; `forced_uid` is a non-admin's own uid."""
    prio = params.get("priority")
    grep = params.get("grep")
    if grep is not None:
        try:
            compile_grep(grep)
        except re.error as e:
            raise ValueError(f"grep: bad regular expression: {e}") from None
    return Filters(
        since=parse_time(params["since"], now) if params.get("since") is not None else None,
        until=parse_time(params["until"], now) if params.get("until") is not None else None,
        priority=severity(prio) if prio is not None else None,
        ident=params.get("ident"),
        pid=params.get("pid"),
        uid=forced_uid if forced_uid is not None else params.get("uid"),
        grep=grep,
        limit=params.get("limit") or 100,
        after_id=params.get("after_id"),
    )


def _regexp(pattern: str, text: str | None) -> bool:
    return text is not None and compile_grep(pattern).search(text) is not None


class Reader:
    """Queries on a pool of read-only connections."""

    def __init__(self, path: str, size: int = 4) -> None:
        self.path = path
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._size = size

    def _get(self) -> sqlite3.Connection:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self._size:
                conn = connect(self.path, readonly=True)
                conn.create_function("regexp", 2, _regexp, deterministic=True)
                self._all.append(conn)
                return conn
        return self._pool.get()

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._get()
        try:
            return fn(conn)
        finally:
            self._pool.put(conn)

    def query(self, f: Filters) -> list[dict[str, Any]]:
        return [row_dict(r) for r in self.run(lambda c: _query(c, f))]

    def count(self, f: Filters) -> int:
        """How many entries match `f` with after_id < id <= until_id."""
        where, args = f.where()
        sql = f"SELECT count(*) FROM entries WHERE {where} AND id > ? AND id <= ?"
        upto = f.until_id if f.until_id is not None else 2**63 - 1
        return int(self.run(lambda c: c.execute(sql, (*args, f.after_id or 0, upto)).fetchone()[0]))

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _id_bounds(conn: sqlite3.Connection, f: Filters) -> tuple[int | None, int | None]:
    # Time and id grow together, so a time bound becomes an id bound through the
    # time index; the time terms stay in the WHERE for exactness.
    low = high = None
    if f.since is not None:
        low = conn.execute("SELECT min(id) FROM entries WHERE time >= ?", (f.since,)).fetchone()[0]
        low = -1 if low is None else low
    if f.until is not None:
        high = conn.execute("SELECT max(id) FROM entries WHERE time <= ?", (f.until,)).fetchone()[0]
        high = -1 if high is None else high
    return low, high


def _query(conn: sqlite3.Connection, f: Filters) -> list[tuple[Any, ...]]:
    where, args = f.where()
    low, high = _id_bounds(conn, f)
    if low == -1 or high == -1:
        return []
    if f.after_id is not None:
        low = max(low or 0, f.after_id + 1)
    if f.until_id is not None:
        high = f.until_id if high is None else min(high, f.until_id)
    bounds = ""
    if low is not None:
        bounds += " AND id >= ?"
        args.append(low)
    if high is not None:
        bounds += " AND id <= ?"
        args.append(high)
    # "+time" keeps the planner on the rowid order; the time index served above.
    where = where.replace("time >=", "+time >=").replace("time <=", "+time <=")
    cols = ", ".join(COLUMNS)
    if f.after_id is not None:
        sql = f"SELECT {cols} FROM entries WHERE {where}{bounds} ORDER BY id ASC LIMIT ?"
        return conn.execute(sql, (*args, f.limit)).fetchall()
    sql = f"SELECT {cols} FROM entries WHERE {where}{bounds} ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, (*args, f.limit)).fetchall()
    rows.reverse()
    return rows


class Follower(Protocol):
    def wake(self, last_id: int) -> None: ...


class FollowHub:
    """Live followers of the log; the writer tells them the last id of each commit.

    `head` is the last id committed, as far as the hub has heard.
    """

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self._followers: list[Follower] = []
        self._lock = threading.Lock()
        self.on_change: Callable[[bool], None] = lambda any_left: None

    def add(self, f: Follower) -> None:
        with self._lock:
            self._followers = [*self._followers, f]
            self.on_change(True)

    def remove(self, f: Follower) -> None:
        with self._lock:
            self._followers = [x for x in self._followers if x is not f]
            self.on_change(bool(self._followers))

    def __len__(self) -> int:
        return len(self._followers)

    def publish(self, last_id: int) -> None:
        self.head = max(self.head, last_id)
        for f in self._followers:  # the list is replaced, never changed in place
            f.wake(last_id)
