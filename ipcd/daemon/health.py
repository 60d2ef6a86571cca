"""Is ipcd well?  The health check behind the watchdog, and the STATUS= line.

`problem()` is None while every part is alive and has turned within the
whole WATCHDOG_USEC (or is idle); `tick()` pings systemd's watchdog
(WATCHDOG=1, every WATCHDOG_USEC/2, sd_watchdog_enabled(3)) only then, so a
wedged or dead part makes systemd restart ipcd.  `summary()` is the one-line
STATUS= (clients, messages/s, drops).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ipcd.control.app import App
from ipcd.daemon.systemd import Notifier
from ipcd.logs.process import LogProcess

log = logging.getLogger("ipcd")

Part = Callable[[float], str | None]  # stale_s -> what is wrong, or None


class Health:
    def __init__(self, notifier: Notifier, watchdog_s: float | None, app: App) -> None:
        self.notifier = notifier
        self.watchdog_s = watchdog_s  # ping interval: half of WATCHDOG_USEC
        self.app = app
        self.parts: list[Part] = []
        self.logs: LogProcess | None = None
        self.pings = 0
        self._reported = False
        self._last_received = 0
        self._last_rate_at = time.monotonic()
        self.rate = 0.0

    def watch(self, part: Part) -> None:
        self.parts.append(part)

    def problem(self) -> str | None:
        stale_s = max(2 * (self.watchdog_s or 1.0), 2.0)  # the whole WATCHDOG_USEC
        for part in self.parts:
            problem = part(stale_s)
            if problem is not None:
                return problem
        return None

    def tick(self) -> None:
        """A watchdog turn: ping if healthy, else say once what is wrong."""
        problem = self.problem()
        if problem is None:
            self.notifier.watchdog()
            self.pings += 1
            self._reported = False
        elif not self._reported:
            log.error("watchdog: not pinging systemd: %s", problem)
            self._reported = True

    def status(self) -> dict[str, Any]:
        """`status.watchdog`."""
        if not self.watchdog_s:
            return {"enabled": False}
        problem = self.problem()
        return {
            "enabled": True,
            "interval_s": self.watchdog_s,
            "healthy": problem is None,
            "problem": problem,
            "pings": self.pings,
        }

    def summary(self) -> str:
        """The one-line STATUS=: clients, messages/s, drops."""
        now = time.monotonic()
        lp = self.logs
        received = lp.received if lp else 0
        if now - self._last_rate_at >= 0.5:
            self.rate = (received - self._last_received) / (now - self._last_rate_at)
            self._last_received, self._last_rate_at = received, now
        conns = self.app.status_of("connections").get("active", 0)
        dropped = lp.dropped if lp else 0
        text = f"{conns} clients, {self.rate:.0f} msg/s, {received} received, {dropped} dropped"
        problem = lp.store_problem() if lp else None
        if problem:
            text += f"; STORE FAILING: {problem}"
        return text
