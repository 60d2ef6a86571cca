"""One forwarding target: its connection, what is in flight, its cursor, its backoff.

A target moves between three states: `connecting` (resolving, connecting,
the TLS handshake: bounded by `timeout_s`), `connected`, and `backing_off`
after a failure (exponential, from 0.5 s to `backoff_max_s`, with jitter).
While connected it reads the next `batch` of matching entries after what it
has read (`read_pos`), writes them, and moves its `cursor` (the last id
delivered, which `engine` persists) only past what is delivered:

* TCP and TLS: a batch counts as delivered once the peer's TCP has
  acknowledged its last byte (TCP_INFO's bytes_acked against the stream
  offset it ended at) and it was written at least `ack_window_s` ago, on a
  connection that is still up.  A receiver that acknowledged data and then
  died before storing it (a restarted rsyslogd loses what it had queued)
  had `ack_window_s` to store it: after a failure everything after the
  cursor is sent again, so an entry is lost only if the receiver held it
  longer than the window, and duplicates are the entries of that window.
* UDP and journald: a datagram the kernel took is delivered (journald's
  socket keeps what is queued across a restart of journald; UDP promises
  nothing, RFC 5426).

Everything here runs on the engine's one thread and never blocks: a write
takes what the kernel buffer has room for, and the rest waits for POLLOUT.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import random
import select
import socket
import ssl
import threading
from collections import deque
from typing import Any, Protocol

from ipcd.config import ForwardConfig, split_address
from ipcd.logs.forward import journald, rfc5424
from ipcd.logs.forward.links import DatagramLink, StreamLink, tls_context
from ipcd.logs.store import StoredEntry

log = logging.getLogger("ipcd")

CONNECTING, CONNECTED, BACKING_OFF = "connecting", "connected", "backing_off"
BACKOFF_FIRST_S = 0.5
BATCHES_PER_TURN = 8  # then the other targets get their turn
ACK_POLL_S = 0.05  # how often TCP acknowledgements are looked at while data is in flight
UDP_MAX_BYTES = 65507  # RFC 5426 §3.2: what one IPv4 datagram carries


class Store(Protocol):
    def first_id(self) -> int | None: ...

    def read(self, target: Target, after: int, upto: int) -> list[StoredEntry]: ...


class Target:
    def __init__(self, cfg: ForwardConfig, cursor: int, hostname: str) -> None:
        self.cfg = cfg
        self.scheme, self.host, self.port = split_address(cfg.address)
        self.hostname = hostname
        self.cursor = cursor  # the last id delivered
        self.read_pos = cursor  # the last id read from the store (sent, or about to be)
        self.state = BACKING_OFF
        self.retry_at = 0.0  # connect at the first turn
        self.deadline = 0.0
        self.link: StreamLink | DatagramLink | None = None
        self._resolving: concurrent.futures.Future[Any] | None = None
        self._addrs: list[tuple[int, Any]] = []  # addresses of a name not tried yet
        self._out = memoryview(b"")  # stream: the batch being written
        self._pos = 0  # how much of it is written
        self._out_upto = 0
        self._out_count = 0
        self._dgrams: deque[tuple[int, bytes | None]] = deque()  # datagram: (id, message); None marks a scan
        self._inflight: deque[tuple[int, int, float]] = deque()  # stream: (end mark, upto id, written at)
        self._blocked = False
        self.sent = 0
        self.errors = 0
        self.missed = 0
        self.cut = 0  # messages sent without the end of their MSG or the sender's structured data
        self.failures = 0  # in a row, since the last delivery
        self.last_error: str | None = None
        self.where, self.args = _where(cfg)

    # -- the engine's view -----------------------------------------------------------

    def fileno(self) -> int | None:
        return self.link.fileno() if self.link is not None else None

    def wants(self) -> int:
        """The poll events this target waits for now."""
        link = self.link
        if link is None:
            return 0
        if self.state == CONNECTING:
            return link.want
        events = select.POLLIN
        if self._pos < len(self._out) or (self._blocked and self._dgrams):
            events |= select.POLLOUT
        return events

    def due(self, now: float, head: int) -> float:
        """When this target needs a turn even if no event comes."""
        if self.state == BACKING_OFF:
            return self.retry_at
        if self.state == CONNECTING:
            return min(self.deadline, now + ACK_POLL_S) if self._resolving is not None else self.deadline
        if self._inflight:
            return max(self._inflight[0][2] + self.cfg.ack_window_s, now + ACK_POLL_S)
        if self._dgrams and not self._blocked:
            return now  # loaded at the end of the last turn, not sent yet
        idle = self._pos >= len(self._out) and not self._dgrams
        return now if idle and self.read_pos < head else float("inf")

    def turn(self, now: float, head: int, revents: int, store: Store) -> None:
        try:
            if self.state == BACKING_OFF and now >= self.retry_at:
                self._connect(now)
            if self.state == CONNECTING:
                self._connecting(now, revents)
            if self.state == CONNECTED:
                self._pump(now, head, revents, store)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            self._fail(now, e)

    def status(self, head: int) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "type": self.cfg.type,
            "address": self.cfg.address,
            "state": self.state,
            "cursor": self.cursor,
            "lag": max(0, head - self.cursor),
            "sent": self.sent,
            "errors": self.errors,
            "last_error": self.last_error,
            "missed": self.missed,
            "cut": self.cut,
        }

    def _count_cut(self) -> None:
        self.cut += 1

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self._resolving is not None:
            self._resolving.cancel()
            self._resolving = None

    # -- connecting ----------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        self.state = CONNECTING
        self.deadline = now + self.cfg.timeout_s
        if self.scheme == "unix":
            self.link = DatagramLink(socket.AF_UNIX, self.host)
            self._connected()
            return
        kind = socket.SOCK_DGRAM if self.scheme == "udp" else socket.SOCK_STREAM
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:  # a name: resolved off this thread, so a slow DNS holds no other target
            self._resolving = _resolve(self.host, self.port, kind)
            return
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._open(family, (self.host, self.port))

    def _open(self, family: int, sockaddr: Any) -> None:
        if self.scheme == "udp":
            self.link = DatagramLink(family, sockaddr)
            self._connected()
            return
        context = tls_context(self.cfg) if self.scheme == "tls" else None
        self.link = StreamLink(self.cfg, (family, sockaddr), context)

    def _connecting(self, now: float, revents: int) -> None:
        if now > self.deadline:
            link = self.link
            what = "resolving" if self._resolving is not None else getattr(link, "phase", "connecting")
            raise TimeoutError(f"timed out after {self.cfg.timeout_s:g} s ({what})")
        if self._resolving is not None:
            if not self._resolving.done():
                return
            infos, self._resolving = self._resolving.result(), None  # raises socket.gaierror
            self._addrs = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
            self._open_next()
            if self.state == CONNECTED:
                return
        assert isinstance(self.link, StreamLink)
        try:
            if revents or self.link.phase == "tls":
                self.link.progress()
        except OSError:
            if self.link.phase != "tcp" or not self._addrs:
                raise
            self._open_next()  # a name with several addresses (::1 and 127.0.0.1): the next one
            return
        if self.link.up:
            self._connected()

    def _open_next(self) -> None:
        """Connect to the next address the name resolved to; the last one's error is the target's."""
        while True:
            if self.link is not None:
                self.link.close()
                self.link = None
            family, sockaddr = self._addrs.pop(0)
            try:
                self._open(family, sockaddr)
                return
            except OSError:
                if not self._addrs:
                    raise

    def _connected(self) -> None:
        self.state = CONNECTED
        self.read_pos = self.cursor  # everything not known delivered goes again
        if self.failures:
            log.info("forward %s: connected to %s again", self.cfg.name, self.cfg.address)
        else:
            log.info("forward %s: connected to %s", self.cfg.name, self.cfg.address)

    def _fail(self, now: float, e: BaseException) -> None:
        why = _describe(e)
        self.errors += 1
        self.failures += 1
        if self.failures == 1 or why != self.last_error:
            log.warning("forward %s (%s): %s; retrying with backoff", self.cfg.name, self.cfg.address, why)
        self.last_error = why
        self.close()
        self._out, self._pos = memoryview(b""), 0
        self._dgrams.clear()
        self._inflight.clear()
        self._blocked = False
        self.read_pos = self.cursor
        delay = min(self.cfg.backoff_max_s, BACKOFF_FIRST_S * 2 ** min(self.failures - 1, 30))
        self.retry_at = now + delay * random.uniform(0.5, 1.0)  # jitter: targets that failed together retry apart
        self.state = BACKING_OFF

    # -- sending --------------------------------------------------------------------------

    def _pump(self, now: float, head: int, revents: int, store: Store) -> None:
        link = self.link
        assert link is not None
        if revents & (select.POLLIN | select.POLLERR | select.POLLHUP):
            link.check_input()
        if isinstance(link, StreamLink):
            self._pump_stream(link, now, head, store)
            self._ack(link, now)
        else:
            self._pump_datagrams(link, head, store)

    def _pump_stream(self, link: StreamLink, now: float, head: int, store: Store) -> None:
        for _ in range(BATCHES_PER_TURN):
            if self._pos < len(self._out):
                self._pos += link.write(self._out[self._pos :])
                if self._pos < len(self._out):
                    return  # the kernel's buffer is full: POLLOUT says when to go on
                self._inflight.append((link.queued_mark(), self._out_upto, now))
                self.sent += self._out_count
            rows = self._next_rows(head, store)
            if rows is None:
                return
            data = b"".join(
                rfc5424.frame(rfc5424.format_entry(e, self.hostname, self.cfg.max_message_bytes, self._count_cut))
                for e in rows
            )
            self._out, self._pos, self._out_count = memoryview(data), 0, len(rows)

    def _ack(self, link: StreamLink, now: float) -> None:
        if not self._inflight:
            return
        acked = link.acked()
        cutoff = now - self.cfg.ack_window_s
        while self._inflight:
            mark, upto, written_at = self._inflight[0]
            if mark > acked or written_at > cutoff:
                return
            self._inflight.popleft()
            self.cursor = upto
            self.failures = 0

    def _pump_datagrams(self, link: DatagramLink, head: int, store: Store) -> None:
        max_bytes = min(self.cfg.max_message_bytes, UDP_MAX_BYTES)
        for _ in range(BATCHES_PER_TURN):
            while self._dgrams:
                entry_id, data = self._dgrams[0]
                if data is not None:
                    try:
                        if self.scheme == "unix":
                            journald.send(link.sock, data)
                        else:
                            link.sock.send(data)
                    except BlockingIOError:
                        self._blocked = True  # journald's queue is full: POLLOUT says when to go on
                        return
                    self.sent += 1
                self._blocked = False
                self._dgrams.popleft()
                self.cursor = entry_id
                self.failures = 0
            rows = self._next_rows(head, store)
            if rows is None:
                return
            if self.scheme == "unix":
                self._dgrams.extend((e.id, journald.format_entry(e)) for e in rows)
            else:
                self._dgrams.extend(
                    (e.id, rfc5424.format_entry(e, self.hostname, max_bytes, self._count_cut)) for e in rows
                )
            self._dgrams.append((self.read_pos, None))

    def _next_rows(self, head: int, store: Store) -> list[StoredEntry] | None:
        """The next batch after `read_pos` (maybe empty: nothing matched), or None if there is nothing to read."""
        if self.read_pos >= head:
            return None
        self._skip_deleted(head, store)
        if self.read_pos >= head:
            return []
        rows = store.read(self, self.read_pos, head)
        upto = rows[-1].id if len(rows) >= self.cfg.batch else head  # a short page: nothing else up to head matched
        self.read_pos = self._out_upto = upto
        if not rows and isinstance(self.link, StreamLink):
            self._inflight.append((0, upto, float("-inf")))  # delivered once what came before is
        return rows

    def _skip_deleted(self, head: int, store: Store) -> None:
        """Retention removed entries this target had not read: skip ahead, and say how many."""
        first = store.first_id()
        gone = (head if first is None else first - 1) - self.read_pos
        if gone <= 0:
            return
        self.missed += gone
        log.warning(
            "forward %s: %d entries were removed by retention before they could be forwarded (ids %d-%d)",
            self.cfg.name,
            gone,
            self.read_pos + 1,
            self.read_pos + gone,
        )
        self.read_pos += gone
        if isinstance(self.link, StreamLink):
            self._inflight.append((0, self.read_pos, float("-inf")))
        else:
            self._dgrams.append((self.read_pos, None))


def _resolve(host: str, port: int, kind: int) -> concurrent.futures.Future[Any]:
    """getaddrinfo(3) on a daemon thread of its own: one that hangs never holds ipcd's exit."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(socket.getaddrinfo(host, port, 0, kind))
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=run, name="ipcd-forward-dns", daemon=True).start()
    return future


def _where(cfg: ForwardConfig) -> tuple[str, list[Any]]:
    """The target's filters as SQL (unary + keeps the planner on the id order)."""
    terms: list[str] = []
    args: list[Any] = []
    if cfg.priority is not None:
        terms.append("+priority <= ?")
        args.append(cfg.priority)
    for column, values in (("ident", cfg.ident), ("sender_unit", cfg.unit), ("sender_uid", cfg.uid)):
        if values:
            terms.append(f"+{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    return "".join(f" AND {t}" for t in terms), args


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve: {e.strerror}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror if not e.filename else f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__
