"""The log socket: a `UnixDatagramServer` that reads like /dev/log, and its intake.

`LogServer.get_request` reads a burst of datagrams at once (`recvmmsg`):
SCM_CREDENTIALS gives each sender's pid/uid/gid as the kernel saw them
(unix(7), SO_PASSCRED), and MSG_TRUNC a datagram's real length, so that one
longer than `max_datagram_bytes` is stored truncated and flagged instead of
silently cut (the stdlib default reads 8192 bytes and says nothing).
`Intake` parses (`logparse`), rate-limits (`ratelimit`) and hands the rows
to the store's `Writer`, which runs on this same thread: `serve_forever`
waits on the socket and on the writer's wake-up pipe, and commits when due.
While it commits it does not read, so a burst waits in the kernel queue and
blocking senders wait with it: back-pressure, not loss.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import socketserver
import threading
import time
from collections.abc import Hashable
from typing import Any

from ipcd.config import LogConfig
from ipcd.control.access import proc_comm
from ipcd.daemon.binding import Bound, bind_unix
from ipcd.logs.ratelimit import RateLimiter
from ipcd.logs.recvmmsg import Datagram, Receiver
from ipcd.logs.store import Row, Writer
from ipcd.wire.logparse import LogEntry, parse_datagram

log = logging.getLogger("ipcd")

BATCH = 64
SENDER_TTL_S = 5.0
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h


class Intake:
    """Datagrams in, rows out to the writer; the counters `status` shows."""

    def __init__(self, cfg: LogConfig, writer: Writer) -> None:
        self.cfg = cfg
        self.writer = writer
        self.limiter = RateLimiter(cfg.rate_limit_burst, cfg.rate_limit_interval_s)
        self.received = 0
        self.rate_limited = 0
        self.truncated = 0
        self.malformed = 0
        self.suppressed_entries = 0
        self._senders: dict[int, tuple[str | None, Hashable, float, int]] = {}
        self._display: dict[Hashable, str] = {}
        self._me = (os.getpid(), os.getuid(), os.getgid(), proc_comm(os.getpid()))

    def configure(self, cfg: LogConfig) -> None:
        self.cfg = cfg
        self.limiter.configure(cfg.rate_limit_burst, cfg.rate_limit_interval_s)

    def _sender(self, pid: int, uid: int, now: float) -> tuple[str | None, Hashable]:
        """(comm, rate-limit key) of a sender, cached: a /proc read per message is slow.

        The key is the sender's systemd unit where known, else uid and command.
        """
        if len(self._senders) > 4096:
            self._senders.clear()
        comm = proc_comm(pid)
        unit = _unit_of(pid) if pid > 0 else None
        key: Hashable = unit if unit is not None else (uid, comm)
        self._senders[pid] = (comm, key, now + SENDER_TTL_S, uid)
        return comm, key

    def ingest(self, batch: list[Datagram]) -> None:
        """Each item: (data, truncated, pid, uid, gid) as read from the socket."""
        now = time.time()
        rows: list[Row] = []
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
            if entry[11]:  # malformed
                malformed += 1
            if truncated:
                truncated_n += 1
            hit = senders.get(pid)
            if hit is not None and hit[2] > now and hit[3] == uid:
                comm, key = hit[0], hit[1]
            else:
                comm, key = self._sender(pid, uid, now)
            allowed, ended = check(key, entry[0], now)
            if ended:
                append(self._suppressed_row(key, ended, now))
            if not allowed:
                limited += 1
                self._display[key] = f"{comm}[{pid}]" if isinstance(key, tuple) else str(key)
                continue
            append((now, entry, truncated, pid, uid, gid, comm))
        self.received += len(batch)
        self.malformed += malformed
        self.truncated += truncated_n
        self.rate_limited += limited
        if rows:
            self.writer.add(rows)

    def _suppressed_row(self, key: Hashable, n: int, now: float) -> Row:
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
        return (now, entry, False, *self._me)

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


def _unit_of(pid: int) -> str | None:
    """The systemd unit `pid` runs in, from its cgroup path (proc(5), /proc/pid/cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::") or ":name=systemd:" in line:
                    for part in reversed(line.strip().split(":", 2)[2].split("/")):
                        if part.endswith((".service", ".scope")):
                            return part
    except OSError:
        pass
    return None


class LogServer(socketserver.UnixDatagramServer):
    """The datagram socket.  A `request` is a burst of datagrams, not one."""

    def __init__(
        self,
        path: str,
        intake: Intake,
        *,
        bind_and_activate: bool = True,
        mode: int = 0o666,
    ) -> None:
        self.intake = intake
        self.writer = intake.writer
        self.mode = mode
        self.bound: Bound | None = None
        self.use_mmsg = True
        self._receiver: Receiver | None = None
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._tick_at = 0.0
        self.last_progress = time.monotonic()
        super().__init__(path, socketserver.BaseRequestHandler, bind_and_activate)

    def server_bind(self) -> None:
        # Bound with its final mode in one step by bind_unix, in server_activate.
        pass

    def server_activate(self) -> None:
        self.bound = bind_unix(self.socket, str(self.server_address), self.mode)
        self.setup_socket(self.intake.cfg.receive_buffer_bytes)

    def setup_socket(self, rcvbuf: int | None) -> None:
        """SO_PASSCRED always (systemd sets it with PassCredentials=, but an fd
        from elsewhere may lack it), and a large receive buffer if asked."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if rcvbuf:
            try:  # SO_RCVBUFFORCE passes net.core.rmem_max, with CAP_NET_ADMIN
                self.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def get_request(self) -> tuple[Any, Any]:
        return self.read_batch(), None

    def read_batch(self) -> list[Datagram]:
        """What is queued on the socket, up to a batch, without blocking."""
        cap = self.intake.cfg.max_datagram_bytes
        if self._receiver is None or self._receiver.cap != cap:  # first use, or a reload changed it
            if self._receiver is not None:
                self._receiver.close()
            self._receiver = Receiver(self.socket, cap, BATCH, self.use_mmsg)
        return self._receiver.read()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return bool(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.intake.ingest(request)

    def shutdown_request(self, request: Any) -> None:
        pass  # a datagram has no connection to shut

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Read, ingest and commit until `shutdown`, on this one thread.

        Overridden because the loop waits on two things, the socket and the
        writer's wake-up pipe (an op from another thread), and wakes on time
        for the next commit.
        """
        self._stopped.clear()
        writer = self.writer
        try:
            # A bare poll object: the selectors module's bookkeeping costs more
            # than the wait itself when a burst wakes the loop every few datagrams.
            poller = select.poll()
            poller.register(self.socket, select.POLLIN)
            poller.register(writer.wake_fd, select.POLLIN)
            while not self._stopping:
                poller.poll(min(poll_interval, writer.due_in()) * 1000)
                self._read_while_busy()
                writer.service()
                self.service_actions()
        except Exception as e:  # noticed by status and the watchdog, which stops
            writer.dead = f"{type(e).__name__}: {e}"
            log.exception("the log reader and store writer died")
        finally:
            self._stopped.set()

    def _read_while_busy(self) -> None:
        writer = self.writer
        while not self._stopping:
            batch = self.read_batch()
            if not batch:
                return
            self.intake.ingest(batch)
            if writer.due_in() <= 0:
                writer.service()
            if time.monotonic() >= self._tick_at:
                self.service_actions()

    def service_actions(self) -> None:
        now = time.monotonic()
        self.last_progress = now
        if now >= self._tick_at:
            self._tick_at = now + 1.0
            self.intake.sweep()

    def shutdown(self) -> None:
        self._stopping = True
        self.writer.wake()
        self._stopped.wait()

    def drain(self) -> int:
        """Read and ingest everything still queued on the socket (graceful stop)."""
        if self.bound is not None:
            # Refuse new datagrams first (a sender gets EPIPE, unix(7)): a sender
            # blocked on the full queue could otherwise slip one in after the
            # last read, and it would be lost unread at close, its sendto a success.
            # An adopted socket is systemd's: its queue waits for the next ipcd.
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RD)
        total = 0
        while batch := self.read_batch():
            self.intake.ingest(batch)
            total += len(batch)
        self.intake.sweep(final=True)  # what was suppressed is said before the store closes
        return total

    def server_close(self) -> None:
        super().server_close()
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
