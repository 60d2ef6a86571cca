"""Times as journalctl reads them (systemd.time(7)), turned into epoch seconds.

    2026-11-30 12:00[:00[.123]]   a local time; "T" for the space works too
    2026-11-30                    its midnight, local time
    12:00[:00]                    today at that time
    Mon 2026-11-30 12:00          with a weekday, which must match the date
    2026-11-30T12:00:00Z         ISO 8601 / RFC 3339: "Z", "+02:00", "+0200", " UTC"
    now, today, yesterday, tomorrow
    -1h, +5m, -1h 30min           relative to now; "1h ago", "5min left" too
    @1795000000[.5]               epoch seconds

Time spans take systemd's units: us, ms, s, m/min, h, d, w, M (a month,
30.44 days), y (365.25 days), with their long names (`minutes`, `hours`...),
several in a row (`1h 30min`); a bare number is seconds.  `parse_time`
takes its clock as an argument; `TimeParam` is the click type that gives
`--since`/`--until` a usage error (exit 2) naming the flag for anything
else.  ipcctl sends the daemon epoch seconds, never the text.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

import click

from ipcd.wire.daywords import local_midnight, named_time

_SPAN_UNITS_S = {
    **dict.fromkeys(("us", "usec", "µs"), 1e-6),
    **dict.fromkeys(("ms", "msec"), 1e-3),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 604800.0),
    **dict.fromkeys(("M", "month", "months"), 2629800.0),
    **dict.fromkeys(("y", "year", "years"), 31557600.0),
}
_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Zµ]*)")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DATE_TIME = re.compile(
    r"(?:(?P<wday>[A-Za-z]{3,9})\s+)?"
    r"(?:(?P<date>\d{4}-\d{2}-\d{2})(?:[T ]\s*|$))?"
    r"(?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"
    r"\s*(?P<tz>Z|UTC|[+-]\d{2}:?\d{2})?"
)
MAX_EPOCH_S = 253402300799.0  # 9999-12-31T23:59:59Z
_HINT = "try 2026-11-30 12:00, 12:00, today, yesterday, now, -1h, '1h ago', +5m or @EPOCH"


def parse_span(text: str) -> float:
    """Seconds in a time span: `90`, `5m`, `1h 30min`, `2.5d`; `ValueError` otherwise."""
    total, pos, text = 0.0, 0, text.strip()
    if not text:
        raise ValueError("an empty time span")
    while pos < len(text):
        m = _SPAN_PART.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"not a time span: {text!r}")
        unit = m.group(2)
        if unit not in _SPAN_UNITS_S and unit != "" and unit.lower() not in _SPAN_UNITS_S:
            raise ValueError(f"unknown time unit {unit!r} in {text!r}")
        factor = 1.0 if unit == "" else _SPAN_UNITS_S.get(unit, _SPAN_UNITS_S.get(unit.lower(), 1.0))
        total += float(m.group(1)) * factor
        pos = m.end()
    return total


def parse_time(text: str, now: float) -> float:
    """Epoch seconds for `text` (see the module docstring), `now` being epoch seconds; else `ValueError`."""
    value = text.strip()
    if not value:
        raise ValueError(f"an empty time ({_HINT})")
    named = named_time(value, now)
    if named is not None:
        return named
    try:
        when = _relative(value, now) if _looks_relative(value) else _absolute(value, local_midnight(now))
    except (ValueError, OverflowError) as e:
        raise ValueError(f"{e} ({_HINT})") from None
    if not 0 <= when <= MAX_EPOCH_S:  # also catches inf and nan
        raise ValueError(f"{value!r} is out of range (1970 to 9999)")
    return when


def _looks_relative(value: str) -> bool:
    return value[0] in "+-@" or value.endswith((" ago", " left"))


def _relative(value: str, now: float) -> float:
    if value[0] == "@":
        try:
            return float(value[1:])
        except ValueError:
            raise ValueError(f"not epoch seconds: {value!r}") from None
    if value[0] in "+-":
        span = parse_span(value[1:])
        return now + span if value[0] == "+" else now - span
    body, _, word = value.rpartition(" ")
    span = parse_span(body)
    return now - span if word == "ago" else now + span


def _absolute(value: str, midnight: dt.datetime) -> float:
    m = _DATE_TIME.fullmatch(value)
    if m is None or not (m.group("date") or m.group("time")):
        raise ValueError(f"not a time: {value!r}")
    try:
        day = dt.date.fromisoformat(m.group("date")) if m.group("date") else midnight.date()
        clock = dt.time.fromisoformat(_clock(m.group("time"))) if m.group("time") else dt.time()
    except ValueError:
        raise ValueError(f"not a time: {value!r}") from None
    when = dt.datetime.combine(day, clock)
    wday = m.group("wday")
    if wday is not None:
        if wday[:3].lower() not in _WEEKDAYS:
            raise ValueError(f"not a weekday: {wday!r} in {value!r}")
        if _WEEKDAYS.index(wday[:3].lower()) != when.weekday():
            raise ValueError(f"{value!r}: {day.isoformat()} is a {when.strftime('%A')}")
    tz = m.group("tz")
    if tz is None:
        return when.timestamp()  # naive means local time, as journalctl reads it
    offset = dt.timedelta(0)
    if tz not in ("Z", "UTC"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return when.replace(tzinfo=dt.timezone(offset)).timestamp()


def _clock(text: str) -> str:
    """A time as `fromisoformat` reads it: two-digit hours, at most six digits of fraction."""
    head, _, frac = text.partition(".")
    hh, rest = head.split(":", 1)
    return f"{int(hh):02d}:{rest}" + (f".{frac[:6].ljust(6, '0')}" if frac else "")


class TimeParam(click.ParamType[float]):
    """`--since`/`--until`: epoch seconds from journalctl's forms; a bad one is a usage error."""

    name = "TIME"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_time(str(value), self._clock())
        except ValueError as e:
            self.fail(str(e), param, ctx)
