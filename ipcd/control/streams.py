"""A connection's streams: notifications that wait for a slow reader.

A connection that opens a stream (logs.follow, subscribe, kv.watch) gets
one `Outbox`: a bounded queue and a pump thread that writes it out, so that
a slow reader costs only itself.  A notification with nothing ahead of it
goes straight to the socket if the socket takes it at once, so a reader
that keeps up costs no turn of the pump's.  `Stream` is what a method
handler holds.  The connection itself (`server.ClientConnection`) owns the
socket.  What all connections together may hold is `budget`'s.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ipcd.control.budget import SMALL_BYTES, QueueBudget
from ipcd.wire import jsonrpc


class Conn(Protocol):
    """What an outbox needs of its connection."""

    @property
    def outbox(self) -> Outbox | None: ...

    def send(self, data: bytes) -> None: ...

    def try_send(self, data: bytes) -> int: ...

    def finish_send(self, rest: bytes | None) -> None: ...

    def abort(self) -> None: ...

    def stream_closed(self, stream: Stream) -> None: ...


class Outbox:
    """Notifications waiting for one connection's reader.

    Notifications are queued encoded (one line of bytes each), so the queue
    is bounded both in count (`maxlen`) and in bytes (`max_bytes`, the lines
    being written included), and its bytes count in the daemon's `budget`
    (for `uid`; None: an admin's).  An empty queue takes one line however
    long, if the budget has room.  `push` never blocks: past either bound it drops and counts per stream, and the
    reader later gets one `lagged` notification (`stream`, `missed`) in the
    place of what it missed.  The pump thread writes while no reply is being
    prepared (`hold`), so that a subscribing call's result always comes
    before its first notification.  With nothing queued, being written or
    held, a line the socket takes at once is written by the thread that
    pushes it (`_send_now`), the common case of a reader that keeps up.  A
    reader that never drops (a log follower, a cursor over the store) uses
    `offer` instead: no room, no line, and `on_room` is called once the
    pump has made room.
    """

    def __init__(
        self, conn: Conn, maxlen: int, max_bytes: int, budget: QueueBudget | None = None, uid: int | None = None
    ) -> None:
        self.conn = conn
        self.maxlen = maxlen
        self.max_bytes = max_bytes
        self.budget = budget
        self.uid = uid
        self.queued_bytes = 0  # queued and being written
        self._q: deque[bytes] = deque()
        self._rest: bytes | None = None  # the end of a line `_send_now` began: the socket's until it is out
        self._missed: dict[str, int] = {}
        self._cv = threading.Condition()
        self._held = 0
        self._closed = False
        self._on_room: list[Callable[[], None]] = []
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._pump, name="ipcd-outbox", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Notifications waiting to be written."""
        return len(self._q)

    def _full(self, size: int) -> bool:
        """No room for `size` more bytes in this queue (its own bounds; the budget is `_admit`'s)."""
        if not self.queued_bytes:
            return False  # an empty queue takes one line however long (if the budget lets it)
        return len(self._q) >= self.maxlen or self.queued_bytes + size > self.max_bytes

    def _admit(self, size: int, on_room: Callable[[], None] | None = None) -> bool:
        """Room for `size` more bytes, here and in the budget (taken if so); under the lock.

        If not, `on_room` is called once there may be: by the pump, or by the budget.
        """
        if self._full(size):
            if on_room is not None:
                self._on_room.append(on_room)
            return False
        return self.budget is None or self.budget.take(self.uid, size, on_room=on_room)

    def _append(self, line: bytes) -> None:
        self._q.append(line)
        self.queued_bytes += len(line)

    def push(self, stream: str, line: bytes, block: bool = False) -> bool:
        """Queue one encoded line; if full, drop and count it, or with `block` wait for room."""
        size = len(line)
        with self._cv:
            while block and self._full(size) and not self._closed:
                self._cv.wait()
            if self._closed:
                return False
            if self._send_now(line):
                return True
            if not self._admit(size):
                self._missed[stream] = self._missed.get(stream, 0) + 1
                self.dropped += 1
                return False
            self._flush_missed(stream)  # the lagged notice goes in the place of what was missed
            self._append(line)
            self._cv.notify_all()
            return True

    def offer(self, stream: str, line: bytes, on_room: Callable[[], None]) -> bool:
        """Queue one encoded line if there is room; if not, call `on_room` (once) when there is."""
        with self._cv:
            if self._closed:
                return False
            if self._send_now(line):
                return True
            if not self._admit(len(line), on_room):
                return False
            self._flush_missed(stream)  # the lagged notice goes in the place of what was missed
            self._append(line)
            self._cv.notify_all()
            return True

    def _send_now(self, line: bytes) -> bool:
        """With nothing ahead of `line`, write it straight to the socket (under the lock); True if it went.

        Nothing queued, nothing being written, no reply being made (`hold`),
        no lagged notice owed, and a line of at most `SMALL_BYTES`: then it
        goes out from the caller's thread, without a turn of the pump's.
        If the socket takes part of it, the connection's write lock stays
        held (`try_send`) and the pump writes the rest before anything else
        (`_rest`), held outbox or not: nothing, not even a reply, comes
        between the two parts.  The rest is counted in the budget whatever
        its room: half a line sent, the rest must follow, and it is less
        than `SMALL_BYTES`, the size of a reply that is never refused
        either.  False (queue it as usual) if the socket took nothing or is
        busy.
        """
        if len(line) > SMALL_BYTES or self.queued_bytes or self._held or self._missed:  # queued or being written
            return False
        try:
            n = self.conn.try_send(line)
        except OSError:
            return False  # the peer is gone: queued, the pump's send fails and cuts the connection off
        if not n:
            return False
        if n == len(line):
            self.sent += 1
        else:
            self._rest = rest = line[n:]
            self.queued_bytes += len(rest)  # so that what comes next waits behind it
            if self.budget is not None:
                self.budget.take(self.uid, len(rest), force=True)
            self._cv.notify_all()  # counted as sent by the pump, once the rest is out
        return True

    def _flush_missed(self, stream: str) -> None:
        n = self._missed.pop(stream, 0)
        if n:
            line = jsonrpc.to_bytes(jsonrpc.notification_line("lagged", {"stream": stream, "missed": n}))
            if self.budget is not None:
                self.budget.take(self.uid, len(line), force=True)
            self._append(line)

    def hold(self) -> None:
        with self._cv:
            self._held += 1

    def release(self) -> None:
        with self._cv:
            self._held -= 1
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            held, self.queued_bytes = self.queued_bytes, 0  # what is queued and what is being written
            self._q.clear()
            self._cv.notify_all()
        if self.budget is not None:
            self.budget.give(self.uid, held)  # outside the lock: it may call others' `on_room`

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _pump(self) -> None:
        while True:
            with self._cv:
                while not self._closed and self._rest is None and (self._held or not (self._q or self._missed)):
                    self._cv.wait()
                rest, self._rest = self._rest, None
                if self._closed:
                    if rest is not None:
                        self.conn.finish_send(None)  # let go of the socket: the connection is going
                    return
                if rest is not None:  # first, and even while a reply is being made: it waits for the socket
                    data, n = rest, 1
                else:
                    if not self._q:
                        for stream in list(self._missed):
                            self._flush_missed(stream)
                    n = min(len(self._q), 256)
                    data = b"".join([self._q.popleft() for _ in range(n)])  # counted in queued_bytes until sent
            try:
                if rest is not None:
                    self.conn.finish_send(rest)
                else:
                    self.conn.send(data)
            except (OSError, ValueError):
                # The reader is gone or stalled past the send timeout: cut it off.
                self.conn.abort()
                return
            with self._cv:
                if self._closed:  # close() gave back what was queued, these bytes included
                    return
                self.sent += n
                self.queued_bytes -= len(data)
                self._cv.notify_all()  # room for a producer that waits (block=True)
                on_room, self._on_room = self._on_room, []
            if self.budget is not None:
                self.budget.give(self.uid, len(data))  # outside the lock: it may call others' `on_room`
            for fn in on_room:
                fn()


class Stream:
    """One subscription on a connection, as a handler holds it."""

    def __init__(self, conn: Conn, name: str) -> None:
        self.conn = conn
        self.name = name
        self.closed = False
        self.weight = 1  # how many streams it counts as (a subscription: its channels)

    def push(self, method: str, params: Any, block: bool = False) -> bool:
        """Queue a notification (`params` may be `jsonrpc.Raw`); False if it was dropped."""
        return self.push_line(jsonrpc.to_bytes(jsonrpc.notification_line(method, params)), block)

    def offer(self, line: bytes, on_room: Callable[[], None]) -> bool:
        """Queue an encoded notification if there is room, else call `on_room` once there is (`Outbox.offer`)."""
        outbox = self.conn.outbox
        if self.closed or outbox is None:
            return False
        return outbox.offer(self.name, line, on_room)

    def push_line(self, line: bytes, block: bool = False) -> bool:
        """Queue an encoded notification (one encoding for many subscribers)."""
        outbox = self.conn.outbox
        if self.closed or outbox is None:
            return False
        return outbox.push(self.name, line, block)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.stream_closed(self)
