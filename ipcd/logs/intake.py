"""Log intake: datagrams in, rows out to the store's writer.

`Intake.ingest` takes what one read of the log socket returned (`recvmmsg`:
data, real length, the sender's pid/uid/gid from SCM_CREDENTIALS), parses
each datagram (`wire.logparse`), adds who sent it (`procfs`: command and
systemd unit, cached per pid for a few seconds), rate-limits per sender
(`ratelimit`) and hands the rows to the `Writer`.  It keeps the counters
`status.logs` shows.  It runs on the log thread; sockets are `server`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import NamedTuple

from ipcd import procfs
from ipcd.config import LogConfig
from ipcd.logs.ratelimit import RateLimiter
from ipcd.logs.recvmmsg import Datagram
from ipcd.logs.writer import Received, Writer
from ipcd.wire.logparse import LogEntry, parse_datagram

SENDER_TTL_S = 5.0
_new = tuple.__new__  # Received(...) costs twice as much, for every datagram


class Sender(NamedTuple):
    """What /proc says of a sender's pid, and its rate-limit key."""

    comm: str | None
    unit: str | None
    key: Hashable
    expires: float
    uid: int


class Intake:
    """Datagrams in, rows out to the writer; the counters `status` shows."""

    def __init__(self, cfg: LogConfig, writer: Writer) -> None:
        self.cfg = cfg
        self.writer = writer
        self.limiter = RateLimiter(cfg.rate_limit_burst, cfg.rate_limit_interval_s, cfg.max_senders)
        self.received = 0
        self.rate_limited = 0
        self.truncated = 0
        self.malformed = 0
        self.suppressed_entries = 0
        self._senders: dict[int, Sender] = {}
        self._display: dict[Hashable, str] = {}
        self._me = (os.getpid(), os.getuid(), os.getgid(), procfs.comm(os.getpid()), procfs.unit(os.getpid()))

    def configure(self, cfg: LogConfig) -> None:
        self.cfg = cfg
        self.limiter.configure(cfg.rate_limit_burst, cfg.rate_limit_interval_s, cfg.max_senders)

    def _sender(self, pid: int, uid: int, now: float) -> Sender:
        """Who `pid` is, from /proc, cached a few seconds: a /proc read per message is slow."""
        if len(self._senders) > 4096:
            self._senders.clear()
        comm = procfs.comm(pid)
        unit = procfs.unit(pid)
        # Rate limits are per systemd unit where known, else per uid and command (DESIGN.md).
        key: Hashable = unit if unit is not None else (uid, comm)
        key = self.limiter.key_for(key, f"uid {uid}")  # too many senders to keep apart: one window per uid
        s = self._senders[pid] = Sender(comm, unit, key, now + SENDER_TTL_S, uid)
        return s

    def ingest(self, batch: list[Datagram]) -> None:
        """Parse, rate-limit and hand to the writer what one read returned."""
        now = time.time()
        rows: list[Received] = []
        append = rows.append
        check = self.limiter.check
        senders = self._senders
        parse = parse_datagram
        malformed = truncated_n = limited = 0
        for data, truncated, pid, uid, gid in batch:
            if not data:
                malformed += 1  # DESIGN.md: counted, not stored
                continue
            entry = parse(data)
            if entry.malformed:
                malformed += 1
            if truncated:
                truncated_n += 1
            s = senders.get(pid)
            if s is None or s.expires < now or s.uid != uid:
                s = self._sender(pid, uid, now)
            comm, unit, key, _, _ = s  # at once: a NamedTuple's fields read by name cost a lookup each
            allowed, ended = check(key, entry.priority, now)
            if ended:
                append(self._suppressed_row(key, ended, now))
            if not allowed:
                limited += 1
                self._display[key] = f"{comm}[{pid}]" if isinstance(key, tuple) else str(key)
                continue
            append(_new(Received, (now, entry, truncated, pid, uid, gid, comm, unit)))
        self.received += len(batch)
        self.malformed += malformed
        self.truncated += truncated_n
        self.rate_limited += limited
        if rows:
            self.writer.add(rows)

    def _suppressed_row(self, key: Hashable, n: int, now: float) -> Received:
        who = self._display.pop(key, str(key))
        self.suppressed_entries += 1
        entry = LogEntry(
            4,
            5,
            "ipcd",
            self._me[0],
            None,
            None,
            None,
            None,
            {"suppressed": n, "sender": who},
            f"suppressed {n} messages from {who}",
            "plain",
            False,
        )
        return Received(now, entry, False, *self._me)

    def sweep(self, final: bool = False) -> None:
        """Report windows that ended with no next message to report them
        (`final`: every window, ended or not, since ipcd stops)."""
        now = time.time()
        rows = [self._suppressed_row(key, n, now) for key, n in self.limiter.sweep(now, final)]
        if rows:
            self.writer.add(rows)

    def status(self) -> dict[str, int]:
        return {
            "received": self.received,
            "stored": self.writer.stored,
            "rate_limited": self.rate_limited,
            "truncated": self.truncated,
            "malformed": self.malformed,
            "dropped": self.writer.dropped + self.writer.unstorable,
            "pending": self.writer.pending,
        }
