"""`ipcd.ctl.timespec`: journalctl's time forms (systemd.time(7)) as ipcctl reads them, against an injected clock."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from ipcd.ctl.timespec import parse_span, parse_time

NOW = dt.datetime(2026, 11, 30, 15, 30, 45, 250000).timestamp()  # a Monday, local time


def local(*args: int) -> float:
    return dt.datetime(*args).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("today", local(2026, 11, 30)),
        ("yesterday", local(2026, 11, 29)),
        ("tomorrow", local(2026, 12, 1)),
        ("TODAY", local(2026, 11, 30)),
        ("2026-11-30 12:00", local(2026, 11, 30, 12, 0)),
        ("2026-11-30 12:00:07", local(2026, 11, 30, 12, 0, 7)),
        ("2026-11-30 12:00:07.5", local(2026, 11, 30, 12, 0, 7) + 0.5),
        ("2026-11-30T12:00", local(2026, 11, 30, 12, 0)),
        ("2026-11-30", local(2026, 11, 30)),
        ("12:00", local(2026, 11, 30, 12, 0)),
        ("9:05:01", local(2026, 11, 30, 9, 5, 1)),
        ("Mon 2026-11-30 12:00", local(2026, 11, 30, 12, 0)),
        ("Monday 2026-11-30", local(2026, 11, 30)),
        ("2026-11-30T12:00:00Z", dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp()),
        ("2026-11-30 12:00 UTC", dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp()),
        ("2026-11-30T12:00:00+02:00", dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC).timestamp()),
        ("2026-11-30T12:00:00-0530", dt.datetime(2026, 11, 30, 17, 30, tzinfo=dt.UTC).timestamp()),
        ("-1h", NOW - 3600),
        ("-90", NOW - 90),
        ("+5m", NOW + 300),
        ("-1h 30min", NOW - 5400),
        ("-1h30m", NOW - 5400),
        ("1h ago", NOW - 3600),
        ("2 days ago", NOW - 2 * 86400),
        ("5min left", NOW + 300),
        ("-2w", NOW - 14 * 86400),
        ("-500ms", NOW - 0.5),
        ("@1795000000", 1795000000.0),
        ("@1795000000.25", 1795000000.25),
        ("  -1h  ", NOW - 3600),
    ],
)
def test_times(text: str, expected: float) -> None:
    assert parse_time(text, NOW) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soonish",
        "25:99",
        "2026-13-01",
        "2026-02-30",
        "Tue 2026-11-30",  # a Monday
        "Xyz 2026-11-30",
        "-",
        "-1x",
        "1 fortnight ago",
        "@abc",
        "@-5",
        "@1e400",
        "+99999999999d",
        "10000-01-01",
        "2026-11-30 12:00 +25:00x",
    ],
)
def test_what_is_no_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, NOW)


def test_spans() -> None:
    assert parse_span("90") == 90
    assert parse_span("1d 2h 3min 4s") == 86400 + 7200 + 180 + 4
    assert parse_span("1M") == 2629800  # systemd: 30.44 days
    assert parse_span("1m") == 60


def test_today_is_local_midnight_across_dst() -> None:
    """On the day DST ends in Berlin, 'today' is local midnight (UTC+2), not UTC+1's."""
    code = (
        "import datetime as dt, time; from ipcd.ctl.timespec import parse_time; "
        "now = dt.datetime(2026, 10, 25, 12).timestamp(); "
        "print(parse_time('today', now), dt.datetime(2026, 10, 25, tzinfo=dt.timezone(dt.timedelta(hours=2))).timestamp())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TZ": "Europe/Berlin"}, capture_output=True, text=True
    )
    got, want = out.stdout.split()
    assert float(got) == float(want)
