"""What `logs.query` and `logs.follow` select: `Filters`, read from method params.

The params (DESIGN.md "Methods", README "Reading logs"), each read here
into a plain value, a bad one raising `ValueError` with the reason:

- `since`, `until`: epoch seconds or a time string (`parse_time`);
- `priority`: a level (0-7 or a name) meaning that level and more severe,
  or a range `FROM..TO` (inclusive, either order), `FROM..` (FROM down to
  debug) or `..TO` (emerg down to TO), as journalctl -p;
- `ident`, `unit`: a string or a list of strings, any of which matches
  (`unit` is the stored `sender_unit`);
- `pid`, `uid`: the sender's trusted pid and uid;
- `grep`: an RE2 pattern (`grep`);
- `limit`, `after_id`, `before_id`: which slice of what matches.

`Filters.where` is the SQL for all of them but `grep`, which the reader
applies itself (`query`, `follow`).  Time bounds are also turned into id
bounds there, since ids order time.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

from ipcd.logs.grep import compile_grep
from ipcd.wire.daywords import local_midnight, named_time
from ipcd.wire.priority import SEVERITY_NAMES, severity

MAX_LIMIT = 10000
MAX_NAMES = 64  # idents or units in one filter
MAX_NAME_CHARS = 1024
DEBUG = len(SEVERITY_NAMES) - 1

_REL = re.compile(r"^([+-])\s*(\d{1,12}(?:\.\d{1,9})?)\s*(s|sec|secs|m|min|mins|h|hour|hours|d|day|days|w|week|weeks)$")
_AGO = re.compile(r"^(\d{1,12}(?:\.\d{1,9})?)\s*(s|sec|secs|m|min|mins|h|hour|hours|d|day|days|w|week|weeks)\s+ago$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EPOCH = re.compile(r"@\d{1,15}(?:\.\d{1,9})?")
_CLOCK = re.compile(r"\d\d:\d\d(:\d\d)?")
_TIME_HINT = "try 2026-11-27 10:00, -5m, 2h ago, today, yesterday, or @EPOCH"


def parse_time(value: Any, now: float) -> float:
    """Epoch seconds from a number, `@1795000000`, `now`, `today`, `yesterday`, `-5m`, `5m ago`, or ISO 8601 (local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        when = float(value)
    elif isinstance(value, str):
        when = _parse_time_text(value, now)
    else:
        raise ValueError("must be epoch seconds or a time string")
    if not math.isfinite(when):
        raise ValueError(f"out of range: {value!r}")
    return when


def _parse_time_text(value: str, now: float) -> float:
    text = value.strip().lower()
    try:
        named = named_time(text, now)
        if named is not None:
            return named
        if _EPOCH.fullmatch(text):  # epoch seconds from a command line, "@" as systemd.time(7)
            return float(text[1:])
        m = _REL.match(text)
        if m:
            sign = -1 if m.group(1) == "-" else 1
            return now + sign * float(m.group(2)) * _UNIT_S[m.group(3)[0]]
        m = _AGO.match(text)
        if m:
            return now - float(m.group(1)) * _UNIT_S[m.group(2)[0]]
        if _CLOCK.fullmatch(text):
            text = f"{local_midnight(now).date().isoformat()} {text}"
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.astimezone()  # naive means local time, as journalctl --since
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        # OverflowError: a date that local time pushes past year 9999 ("9999-12-31T23:59:59" at UTC-5).
        raise ValueError(f"not a time: {value!r} ({_TIME_HINT})") from None


def parse_priority(value: Any) -> tuple[int, int]:
    """(most, least) severe level selected, inclusive: `3`/`err` -> (0, 3); `warning..err` -> (3, 4)."""
    if isinstance(value, str) and ".." in value:
        left, _, right = value.partition("..")
        if not left.strip() and not right.strip():
            raise ValueError(f"not a priority range: {value!r} (FROM..TO, FROM.. or ..TO)")
        a = severity(left) if left.strip() else 0
        b = severity(right) if right.strip() else DEBUG
        return min(a, b), max(a, b)
    return 0, severity(value)


def parse_names(value: Any) -> tuple[str, ...]:
    """A string or a non-empty list of at most MAX_NAMES strings, each at most MAX_NAME_CHARS long."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("must be a string or a list of strings")
    if not names:
        raise ValueError("must not be an empty list")
    if len(names) > MAX_NAMES:
        raise ValueError(f"at most {MAX_NAMES} names, got {len(names)}")
    if any(len(n) > MAX_NAME_CHARS for n in names):
        raise ValueError(f"a name longer than {MAX_NAME_CHARS} characters")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Filters:
    since: float | None = None
    until: float | None = None
    priority: tuple[int, int] | None = None  # (most, least) severe, inclusive
    idents: tuple[str, ...] | None = None
    units: tuple[str, ...] | None = None
    pid: int | None = None
    uid: int | None = None
    grep: str | None = None
    limit: int = 100
    after_id: int | None = None  # only ids above it
    before_id: int | None = None  # only ids below it

    def held_bytes(self) -> int:
        """About the memory its texts (idents, units, the pattern) take, what a follower holds of them:
        each string as Python keeps it (1, 2 or 4 bytes a character, and its header), and its place in
        the lists and the query's arguments."""
        texts = [*(self.idents or ()), *(self.units or ()), *((self.grep,) if self.grep is not None else ())]
        return sum(sys.getsizeof(t) + 32 for t in texts)

    def where(self) -> tuple[str, list[Any]]:
        """The SQL for every filter but `grep` and the id bounds.

        The time terms keep a unary `+`, so that the planner never walks an index on
        time: id bounds (found by `query.time_bounds`) narrow the scan instead.
        """
        terms: list[str] = []
        args: list[Any] = []
        if self.since is not None:
            terms.append("+time >= ?")
            args.append(self.since)
        if self.until is not None:
            terms.append("+time <= ?")
            args.append(self.until)
        if self.priority is not None:
            lo, hi = self.priority
            if lo == 0:
                terms.append("priority <= ?")
                args.append(hi)
            else:
                terms.append("priority BETWEEN ? AND ?")
                args.extend((lo, hi))
        for column, names in (("ident", self.idents), ("sender_unit", self.units)):
            if names:
                terms.append(f"{column} IN ({', '.join('?' * len(names))})")
                args.extend(names)
        if self.pid is not None:
            terms.append("sender_pid = ?")
            args.append(self.pid)
        if self.uid is not None:
            terms.append("sender_uid = ?")
            args.append(self.uid)
        return (" AND ".join(terms) or "1"), args


def make_filters(params: dict[str, Any], now: float, forced_uid: int | None = None) -> Filters:
    """Filters from method params; `forced_uid` is a non-admin's own uid.  Raises ValueError naming the param."""

    def read(name: str, fn: Any, *args: Any) -> Any:
        value = params.get(name)
        if value is None:
            return None
        try:
            return fn(value, *args)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

    grep = params.get("grep")
    read("grep", compile_grep)
    return Filters(
        since=read("since", parse_time, now),
        until=read("until", parse_time, now),
        priority=read("priority", parse_priority),
        idents=read("ident", parse_names),
        units=read("unit", parse_names),
        pid=params.get("pid"),
        uid=forced_uid if forced_uid is not None else params.get("uid"),
        grep=grep,
        limit=params.get("limit") or 100,
        after_id=params.get("after_id"),
        before_id=params.get("before_id"),
    )
