"""The log socket: a `UnixDatagramServer` that reads like /dev/log.

`LogServer` reads bursts of datagrams at once (`recvmmsg`): SCM_CREDENTIALS
gives each sender's pid/uid/gid as the kernel saw them (unix(7),
SO_PASSCRED), and MSG_TRUNC a datagram's real length, so that one longer
than `max_datagram_bytes` is stored truncated and flagged instead of
silently cut (the stdlib default reads 8192 bytes and says nothing).  What
was read goes to `Intake`, and the store's `Writer` runs on this same
thread: `serve_forever` waits on the socket and on the writer's wake-up
pipe, and commits when due.  While it commits it does not read, so a burst
waits in the kernel queue and blocking senders wait with it: back-pressure,
not loss.

It keeps socketserver's `UnixDatagramServer` for the socket's life cycle
(`fileno`, `shutdown`, `server_close`), but its `serve_forever` is its own
loop, since it waits on two descriptors and reads a burst per wake-up: the
per-request hooks (`get_request`, `process_request`) are not used.  The
socket is handed to it bound (or adopted from systemd) by the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import socketserver
import threading
import time
from collections.abc import Callable

from ipcd.logs.intake import Intake
from ipcd.logs.recvmmsg import Datagram, Receiver

log = logging.getLogger("ipcd")

BATCH = 64
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h


class LogServer(socketserver.UnixDatagramServer):
    """The datagram socket.  A `request` is a burst of datagrams, not one."""

    def __init__(self, sock: socket.socket, intake: Intake, *, owned: bool, rcvbuf: int | None = None) -> None:
        """Serve `sock`, a bound AF_UNIX datagram socket.

        `owned`: ipcd bound it itself (else systemd did, and its queue is
        left to the next ipcd on stop).  `rcvbuf`: the receive buffer to ask
        for (None: leave it, as systemd's ReceiveBuffer= set it).
        """
        self.intake = intake
        self.writer = intake.writer
        self.owned = owned
        self.use_mmsg = True
        self._receiver: Receiver | None = None
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._tick_at = 0.0
        self.last_progress = time.monotonic()
        # More descriptors the loop waits on, with what to do when one is readable.
        self.watched: dict[int, Callable[[], None]] = {}
        self.on_turn: Callable[[], None] | None = None  # after each turn of the loop
        super().__init__(sock.getsockname(), socketserver.BaseRequestHandler, bind_and_activate=False)
        self.socket.close()  # the placeholder socketserver made
        self.socket = sock
        self.setup_socket(rcvbuf)

    def setup_socket(self, rcvbuf: int | None) -> None:
        """SO_PASSCRED always (systemd sets it with PassCredentials=, but an fd
        from elsewhere may lack it), and a large receive buffer if asked."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if rcvbuf:
            try:  # SO_RCVBUFFORCE passes net.core.rmem_max, with CAP_NET_ADMIN
                self.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def read_batch(self) -> list[Datagram]:
        """What is queued on the socket, up to a batch, without blocking."""
        cap = self.intake.cfg.max_datagram_bytes
        if self._receiver is None or self._receiver.cap != cap:  # first use, or a reload changed it
            if self._receiver is not None:
                self._receiver.close()
            self._receiver = Receiver(self.socket, cap, BATCH, self.use_mmsg)
        return self._receiver.read()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Read, ingest and commit until `shutdown`, on this one thread.

        Overridden because the loop waits on several things, the socket, the
        writer's wake-up pipe (an op from another thread) and the `watched`
        descriptors, and wakes on time for the next commit.
        """
        self._stopped.clear()
        writer = self.writer
        try:
            # A bare poll object: the selectors module's bookkeeping costs more
            # than the wait itself when a burst wakes the loop every few datagrams.
            poller = select.poll()
            poller.register(self.socket, select.POLLIN)
            poller.register(writer.wake_fd, select.POLLIN)
            watched = self.watched
            for fd in watched:
                poller.register(fd, select.POLLIN)
            while not self._stopping:
                for fd, _ in poller.poll(min(poll_interval, writer.due_in()) * 1000):
                    if fd in watched:
                        watched[fd]()
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
        if self.on_turn is not None:
            self.on_turn()

    def request_stop(self) -> None:
        """Make `serve_forever` return soon; safe in a signal handler."""
        self._stopping = True
        self.writer.wake()

    def shutdown(self) -> None:
        self.request_stop()
        self._stopped.wait()

    def drain(self) -> int:
        """Read and ingest everything still queued on the socket (graceful stop)."""
        if self.owned:
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
