"""One accepted control connection: its socket, peer, streams and counters.

The handler thread that reads it (`handler.ControlHandler`) is the only one
that counts its requests, so the counters need no lock (a write's reply
handed off to the committing thread counts its failure there, while the
handler counts nothing); the server adds them up for `status` and keeps
what closed connections counted.  Writes come from the handler (replies),
the outbox's pump (notifications) and the thread that commits a handed-off
write (`send_soon`), so they take the write lock.  What a method may do
with it is the `app.Connection` protocol.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ipcd.control.access import Peer
from ipcd.control.streams import Outbox, Stream
from ipcd.errors import LimitReached

if TYPE_CHECKING:
    from ipcd.control.server import ControlServer

log = logging.getLogger("ipcd")
T = TypeVar("T")


_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the call keeps the GIL (a send that cannot block)
_send = _libc.send
# No argtypes: converting through them costs 0.45 us a call, more than the call itself.  Unconverted,
# the fd and flags go as C ints and bytes as their char *, as send(2) takes them (`send_nowait` takes
# bytes only: ctypes would pass a str as wchar_t *).  The length goes as a C int too, which libffi
# sign-extends into the size_t register: right below 2**31 only, so it is kept below `_NOWAIT_MAX`.
_send.restype = ctypes.c_ssize_t
_NOWAIT = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_NOWAIT_MAX = 1 << 30  # more than any socket takes at once, and below 2**31 (a test holds it there)
CLOSE_WAIT_S = 5.0  # how long closing waits for a stream's pump, then for a write under way


def send_nowait(fd: int, data: bytes) -> int:
    """Send what the socket takes at once, without giving up the GIL: the bytes sent (0: none fit)."""
    if type(data) is not bytes:
        raise TypeError(f"send_nowait takes bytes, not {type(data).__name__}")
    size = min(len(data), _NOWAIT_MAX)
    while True:
        n: int = _send(fd, data, size, _NOWAIT)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            return 0
        if err != errno.EINTR:
            raise OSError(err, f"send: {errno.errorcode.get(err, err)}")


class ClientConnection:
    """socketserver passes it to the handler as `request`."""

    def __init__(self, sock: socket.socket, peer: Peer, server: ControlServer) -> None:
        self.sock = sock
        self.peer = peer
        self.server = server
        self.connected_at = time.time()
        self.last_active = time.monotonic()
        self.requests = 0
        self.errors = 0
        self.by_method: dict[str, list[int]] = {}  # name -> [calls, errors]
        self.outbox: Outbox | None = None
        self.streams: set[Stream] = set()
        self._weight = 0  # the streams, a subscription counting one per channel
        self._attached: dict[type, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        """Write all of `data`: what the socket takes at once keeping the GIL, then the rest, blocking.

        Most replies fit in the socket's buffer.  Sent without giving up the
        GIL, they cost no hand-over of it to another busy connection's thread
        and back, which, with 8 or 32 of them busy, took a third of a ping's
        CPU (README "Performance").  A blocking rest is bounded by the send
        timeout (`idle_timeout_s`).
        """
        with self._wlock:
            sent = send_nowait(self.sock.fileno(), data)
            if sent < len(data):
                self.sock.sendall(memoryview(data)[sent:])

    def try_send(self, data: bytes) -> int:
        """Send what the socket takes at once, unless another write is under way: the bytes sent (0: none).

        Never blocks, nor gives up the GIL (`send_nowait`); OSError if the
        peer is gone.  If the socket took part of `data`, the write lock
        stays held: nothing may be written between that part and the rest,
        which the caller must hand to `finish_send` (from any thread).
        """
        if not self._wlock.acquire(blocking=False):
            return 0
        try:
            sent = send_nowait(self.sock.fileno(), data)
        except BaseException:
            self._wlock.release()
            raise
        if not 0 < sent < len(data):
            self._wlock.release()
        return sent

    def finish_send(self, rest: bytes | None) -> None:
        """Write the rest of what `try_send` began (None: give it up, the connection is going), then
        let go of the write lock, whatever happens."""
        try:
            if rest:
                self.sock.sendall(rest)
        finally:
            self._wlock.release()

    def send_soon(self, data: bytes, done: Callable[[bool], None]) -> None:
        """Send `data` without blocking the caller, then call `done(sent)`, exactly once, whatever happens.

        For the thread that commits a write and answers its writer: the
        socket takes the reply at once (sent holding the GIL: a send that
        cannot block needs no hand-back), or a thread of its own sends the
        rest, bounded by the send timeout as any reply.  A reply that cannot
        be sent aborts the connection (its handler stops on its next read),
        as a failed send of the handler's own closes it: the peer never gets
        a later reply without this one.  The caller makes sure nothing else
        is written meanwhile (`handler.Later`).
        """
        ok = passed_on = False
        sent = 0
        try:
            sent = self.try_send(data)
            if sent == len(data):
                ok = True
                return
            rest = threading.Thread(target=self._send_rest, args=(data, sent, done), name="ipcd-reply", daemon=True)
            rest.start()
            passed_on = True
        except OSError:
            pass  # the peer is gone, or no thread to be had
        except RuntimeError:
            log.error("cannot start a thread to finish a reply; closing the connection")
        finally:
            if not passed_on:
                if 0 < sent < len(data):
                    self.finish_send(None)  # the write lock the first part kept
                if not ok:
                    self.abort()
                done(ok)

    def _send_rest(self, data: bytes, sent: int, done: Callable[[bool], None]) -> None:
        ok = False
        try:
            if sent:
                self.finish_send(data[sent:])  # the write lock is held since the first part went (`try_send`)
            else:
                self.send(data)
            ok = True
        except OSError:
            pass  # the send timed out (idle_timeout_s) or the peer is gone
        finally:
            if not ok:
                self.abort()
            done(ok)

    def open_stream(self, name: str) -> Stream:
        c = self.server.app.config.control
        with self._lock:
            self._check_streams(1)
            if self.outbox is None:
                uid = None if self.peer.role == "admin" else self.peer.uid  # admins' bytes are never refused
                budget = self.server.budget
                self.outbox = Outbox(self, c.stream_queue, c.max_queued_bytes_per_connection, budget, uid)
                self.outbox.hold()  # released once the subscribing reply is out
            stream = Stream(self, name)
            self.streams.add(stream)
            self._weight += 1
            return stream

    def weigh(self, stream: Stream, weight: int) -> None:
        """Count `stream` as `weight` streams (a subscription: one per channel), or raise -32002."""
        with self._lock:
            if stream not in self.streams:
                return
            if weight > stream.weight:
                self._check_streams(weight - stream.weight, weight)
            self._weight += weight - stream.weight
            stream.weight = weight

    def _check_streams(self, more: int, asked: int = 1) -> None:
        """Room for `more` streams; else -32002 saying how many are open besides the one that asks `asked`."""
        cap = self.server.app.config.control.max_streams_per_connection
        if self._weight + more > cap:
            raise LimitReached(
                f"{self._weight + more - asked} streams open on this connection (a subscription counts one a "
                f"channel, a follow one more a KiB of filters), {asked} asked; max_streams_per_connection = {cap}",
                "max_streams_per_connection",
                cap,
            )

    def attach(self, kind: type[T], make: Callable[[], T]) -> T:
        """The connection's one `kind` of state (a subscription...), made on first use."""
        with self._lock:
            value = self._attached.get(kind)
        if value is None:  # made outside the lock: `make` may open a stream, which takes it
            value = make()
            with self._lock:
                value = self._attached.setdefault(kind, value)
        return value  # type: ignore[no-any-return]

    def attachment(self, kind: type[T]) -> T | None:
        with self._lock:
            return self._attached.get(kind)

    def detach(self, kind: type) -> None:
        with self._lock:
            self._attached.pop(kind, None)

    def stream_closed(self, stream: Stream) -> None:
        with self._lock:
            if stream in self.streams:
                self.streams.discard(stream)
                self._weight -= stream.weight

    def on_close(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                run_now = True
            else:
                self._closers.append(fn)
                run_now = False
        if run_now:
            fn()

    def describe(self) -> dict[str, Any]:
        """This connection as `clients` shows it (less `self`)."""
        p = self.peer
        out = self.outbox
        streams = sorted(s.name for s in list(self.streams))
        return {
            "pid": p.pid,
            "uid": p.uid,
            "gid": p.gid,
            "command": p.comm,
            "role": p.role,
            "connected_at": self.connected_at,
            "idle_s": round(time.monotonic() - self.last_active, 3),
            "requests": self.requests,
            "streams": [
                {"name": n, "queued": out.queued if out else 0, "dropped": out.dropped if out else 0} for n in streams
            ],
        }

    def stop(self) -> None:
        """Stop reading (graceful stop): queued requests are still answered."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            closers, self._closers = self._closers, []
            for s in self.streams:
                s.closed = True
            self.streams.clear()
        for fn in closers:
            try:
                fn()
            except Exception:
                log.exception("error while closing a connection's subscriptions")
        self.abort()  # a write blocked on a full socket (the pump's, another thread's) fails now
        if self.outbox is not None:
            self.outbox.close()
            self.outbox.join(CLOSE_WAIT_S)
        # Not while a write is under way on another thread (a publisher's direct write, a
        # committing thread's reply): it has read the fd's number, which the next accept may
        # get the moment it is closed, and its bytes would go to that other client.
        writing = not self._wlock.acquire(timeout=CLOSE_WAIT_S)
        if writing:
            log.warning("closing a control connection whose write did not end in %g s", CLOSE_WAIT_S)
        try:
            self.sock.close()
        finally:
            if not writing:
                self._wlock.release()
