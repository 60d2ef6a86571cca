"""The words for a day that journalctl's --since/--until take: now, today, yesterday, tomorrow.

One table for ipcctl (which reads its flags) and the daemon (which reads a
`since`/`until` sent as text).  Local time, naive: `.timestamp()` then gives
each date its own UTC offset, so that "today" is local midnight on a day DST
begins or ends too (a fixed offset is not).
"""

from __future__ import annotations

import datetime as dt


def local_midnight(now: float) -> dt.datetime:
    """The local midnight that began the day of epoch seconds `now` (naive)."""
    return dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)


def named_time(word: str, now: float) -> float | None:
    """Epoch seconds for `now`, `today`, `yesterday` or `tomorrow` (any case); None for another word."""
    w = word.strip().lower()
    if w == "now":
        return dt.datetime.fromtimestamp(now).timestamp()
    days = {"today": 0, "yesterday": -1, "tomorrow": 1}.get(w)
    if days is None:
        return None
    return (local_midnight(now) + dt.timedelta(days=days)).timestamp()
