"""A connection's streams: notifications that wait for a slow reader.

A connection that opens a stream (logs.follow, subscribe, kv.watch) gets
one `Outbox`: a bounded queue and a pump thread that writes it out, so that
a slow reader costs only itself.  `Stream` is what a method handler holds.
The connection itself (`server.ClientConnection`) owns the socket.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Protocol

from ipcd.wire import jsonrpc


class Conn(Protocol):
    """What an outbox needs of its connection."""

    @property
    def outbox(self) -> Outbox | None: ...

    def send(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    def stream_closed(self, stream: Stream) -> None: ...


class Outbox:
    """Notifications waiting for one connection's reader.

    `push` never blocks: past `maxlen` queued notifications it drops and
    counts per stream, and the reader later gets one `lagged` notification
    (`stream`, `missed`) in the place of what it missed.  The pump thread
    writes while no reply is being prepared (`hold`), so that a subscribing
    call's result always comes before its first notification.
    """

    def __init__(self, conn: Conn, maxlen: int) -> None:
        self.conn = conn
        self.maxlen = maxlen
        self._q: deque[dict[str, Any]] = deque()
        self._missed: dict[str, int] = {}
        self._cv = threading.Condition()
        self._held = 0
        self._closed = False
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._pump, name="ipcd-outbox", daemon=True)
        self._thread.start()

    def push(self, stream: str, message: dict[str, Any], block: bool = False) -> bool:
        """Queue `message`; if full, drop and count it, or with `block` wait for room."""
        with self._cv:
            while block and len(self._q) >= self.maxlen and not self._closed:
                self._cv.wait()
            if self._closed:
                return False
            if len(self._q) >= self.maxlen:
                self._missed[stream] = self._missed.get(stream, 0) + 1
                self.dropped += 1
                return False
            self._flush_missed(stream)
            self._q.append(message)
            self._cv.notify_all()
            return True

    def _flush_missed(self, stream: str) -> None:
        n = self._missed.pop(stream, 0)
        if n:
            self._q.append(jsonrpc.notification("lagged", {"stream": stream, "missed": n}))

    def hold(self) -> None:
        with self._cv:
            self._held += 1

    def release(self) -> None:
        with self._cv:
            self._held -= 1
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _pump(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (self._held or not (self._q or self._missed)):
                    self._cv.wait()
                if self._closed:
                    return
                if not self._q:
                    for stream in list(self._missed):
                        self._flush_missed(stream)
                batch = [self._q.popleft() for _ in range(min(len(self._q), 256))]
                self._cv.notify_all()  # room for a producer that waits (block=True)
            try:
                self.conn.send(b"".join(jsonrpc.encode(m) for m in batch))
                self.sent += len(batch)
            except (OSError, ValueError):
                # The reader is gone or stalled past the send timeout: cut it off.
                self.conn.abort()
                return


class Stream:
    """One subscription on a connection, as a handler holds it."""

    def __init__(self, conn: Conn, name: str) -> None:
        self.conn = conn
        self.name = name
        self.closed = False

    def push(self, method: str, params: Any, block: bool = False) -> bool:
        outbox = self.conn.outbox
        if self.closed or outbox is None:
            return False
        return outbox.push(self.name, jsonrpc.notification(method, params), block)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.stream_closed(self)
