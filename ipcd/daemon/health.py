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
from collections import deque
from collections.abc import Callable
from typing import Any

from ipcd import procfs
from ipcd.control.app import App
from ipcd.daemon.systemd import Notifier
from ipcd.logs.process import LogProcess

log = logging.getLogger("ipcd")

RATE_WINDOW_S = 5.0
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
        self._samples: deque[tuple[float, int, int]] = deque()  # (monotonic, received, requests)

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

    def sample(self) -> None:
        """Count what came in, for the rates (the main loop calls this about once a second)."""
        now = time.monotonic()
        received = self.logs.received if self.logs else 0
        requests = self.app.status_of("requests").get("total", 0)
        self._samples.append((now, received, requests))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    def rates(self) -> dict[str, float]:
        """`status.rates`: messages and requests per second over the last few seconds."""
        if len(self._samples) < 2:
            return {"messages_per_s": 0.0, "requests_per_s": 0.0}
        (t0, m0, r0), (t1, m1, r1) = self._samples[0], self._samples[-1]
        dt = max(t1 - t0, 1e-6)
        return {"messages_per_s": round((m1 - m0) / dt, 1), "requests_per_s": round((r1 - r0) / dt, 1)}

    def memory(self) -> dict[str, int | None]:
        """`status.memory`: resident memory of both processes."""
        log_pid = self.logs.pid if self.logs else 0
        return {
            "rss_bytes": procfs.rss_bytes(),
            "log_process_rss_bytes": procfs.rss_bytes(log_pid) if log_pid else None,
        }

    def summary(self) -> str:
        """The one-line STATUS=: clients, messages/s, drops."""
        lp = self.logs
        received = lp.received if lp else 0
        conns = self.app.status_of("connections").get("active", 0)
        dropped = lp.dropped if lp else 0
        rate = self.rates()["messages_per_s"]
        text = f"{conns} clients, {rate:.0f} msg/s, {received} received, {dropped} dropped"
        problem = lp.store_problem() if lp else None
        if problem:
            text += f"; STORE FAILING: {problem}"
        return text
