"""Is ipcd well?  The health check behind the watchdog, and the STATUS= line.

`problem()` is None while every part is alive and has turned within the
whole WATCHDOG_USEC (or is idle); `tick()` pings systemd's watchdog
(WATCHDOG=1, every WATCHDOG_USEC/2, sd_watchdog_enabled(3)) only then, so a
wedged or dead part makes systemd restart ipcd.  `summary()` is the one-line
STATUS= (clients, messages/s, drops).
"""

from __future__ import annotations

import logging
import os
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
BUSY_MSGS_PER_S = 1000
CALM_S = 5.0  # how long intake stays calm before the control process gets its priority back
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

    def busy(self) -> bool:
        """Whether intake is busy: over BUSY_MSGS_PER_S in the last second (see `Priority`)."""
        if len(self._samples) < 2:
            return False
        (t0, m0, _), (t1, m1, _) = self._samples[-2], self._samples[-1]
        return (m1 - m0) / max(t1 - t0, 1e-6) >= BUSY_MSGS_PER_S

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


class Priority:
    """Intake before queries, while intake is busy (DESIGN.md "Processes and sockets").

    A blocked log socket blocks every service that logs, so while the log
    process is busy the control process's threads run `[daemon] control_nice`
    below it, and the scheduler favours intake on a busy machine; once intake
    has been calm a few seconds they get their priority back, so control
    clients get the whole machine when logging is light.  Going back needs
    RLIMIT_NICE (root, or the unit's LimitNICE=); where it is not allowed the
    threads stay niced, and that is said once.
    """

    def __init__(self) -> None:
        self.nice = 0  # over the base, now
        self._calm_since = 0.0
        self._stuck = False

    def adjust(self, busy: bool, nice: int) -> None:
        now = time.monotonic()
        if busy:
            self._calm_since = 0.0
            want = nice
        else:
            self._calm_since = self._calm_since or now
            want = 0 if now - self._calm_since >= CALM_S else self.nice
        if want != self.nice and not (self._stuck and want < self.nice):
            self._renice(want)

    def _renice(self, want: int) -> None:
        step = want - self.nice
        for tid in _threads():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + step)
            except ProcessLookupError:
                continue  # a thread that ended meanwhile
            except OSError as e:
                if step < 0:  # no RLIMIT_NICE to come back: stay as nice as we are
                    self._stuck = True
                    log.info(
                        "the control process stays at nice +%d: %s (LimitNICE= allows coming back)",
                        self.nice,
                        e.strerror,
                    )
                else:
                    log.warning("cannot lower the control process's priority (daemon.control_nice): %s", e.strerror)
                return
        self.nice = want


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [os.getpid()]
