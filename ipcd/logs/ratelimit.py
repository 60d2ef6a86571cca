"""Per-sender rate limiting for the log socket, as journald does it.

Each sender gets a window of `interval_s` that opens with its first
message; within it the first `burst` messages pass and the rest are
suppressed and counted.  When the window has ended, the sender's next
message (or a sweep) reports the count once, so that intake can store
one "suppressed N messages from ..." entry per window.  Priorities crit and
above (0..2) count in a bucket of their own with `CRIT_FACTOR` times the
burst (DESIGN.md "Log socket"): a flood of chatter never hides an
emergency, and a flood of "emergencies" is still limited.

The windows kept are bounded (`max_windows`, `[log] max_senders`): a
local user who makes up new senders (a new command name per process, a new
transient unit) would otherwise grow the table without end; past the bound,
`key_for` gives a sender that has no window yet the caller's fallback key
(its uid's shared window), so the flood is limited as one sender.

The clock is passed in; who the sender is (its unit, or uid and command)
is decided by the caller.
"""

from __future__ import annotations

from collections.abc import Hashable

CRIT = 2
CRIT_FACTOR = 4


class RateLimiter:
    __slots__ = ("burst", "interval_s", "max_windows", "_windows", "suppressed_total", "shared")

    def __init__(self, burst: int, interval_s: float, max_windows: int = 16384) -> None:
        self.burst = burst  # 0: no limit
        self.interval_s = interval_s
        self.max_windows = max_windows
        # key -> [window start, messages in window, suppressed in window, crit messages in window]
        self._windows: dict[Hashable, list[float]] = {}
        self.suppressed_total = 0
        self.shared = 0  # senders given `fallback` by `key_for`: the table was full

    def configure(self, burst: int, interval_s: float, max_windows: int = 16384) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self.max_windows = max_windows

    def key_for(self, key: Hashable, fallback: Hashable) -> Hashable:
        """`key`, unless it has no window and the table is full: then `fallback`."""
        if len(self._windows) < self.max_windows or key in self._windows:
            return key
        self.shared += 1
        return fallback

    @property
    def windows(self) -> int:
        """The windows kept now (at most `max_windows`, fallbacks included)."""
        return len(self._windows)

    def check(self, key: Hashable, priority: int, now: float) -> tuple[bool, int]:
        """(let this message through?, suppressed count of the window just ended)."""
        if self.burst <= 0:
            return True, 0
        w = self._windows.get(key)
        if w is None:
            # A crit message opens the window but takes no share of the others' burst.
            crit = priority <= CRIT
            self._windows[key] = [now, 0.0 if crit else 1.0, 0.0, 1.0 if crit else 0.0]
            return True, 0
        ended = 0
        if now - w[0] >= self.interval_s or now < w[0]:  # a new window (or the clock went back)
            ended = int(w[2])
            w[0], w[1], w[2], w[3] = now, 0.0, 0.0, 0.0
        if priority <= CRIT:
            if w[3] < self.burst * CRIT_FACTOR:
                w[3] += 1
                return True, ended
        elif w[1] < self.burst:
            w[1] += 1
            return True, ended
        w[2] += 1
        self.suppressed_total += 1
        return False, ended

    def sweep(self, now: float, final: bool = False) -> list[tuple[Hashable, int]]:
        """Forget ended windows (all of them when `final`: ipcd stops);
        (key, suppressed) for those that suppressed any."""
        report = []
        for key, w in list(self._windows.items()):
            if final or now - w[0] >= self.interval_s or now < w[0]:
                if w[2]:
                    report.append((key, int(w[2])))
                del self._windows[key]
        return report

    def __len__(self) -> int:
        return len(self._windows)
