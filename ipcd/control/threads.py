"""Threads for control connections: one per connection while it lasts, kept for the next.

socketserver's `ThreadingMixIn` starts a new thread for each connection, in
the accept loop, and `Thread.start` waits there until the new thread has run.
While other threads keep the GIL busy (a flood of publishes, say), that wait
is a few turns at the GIL, milliseconds, and the accept loop falls behind a
user who opens and drops 1,000 connections a second: the kernel's queue
(SOMAXCONN) fills with them, and every other client's connection waits
behind them, for seconds (`bench/churn.py`).  Here a connection goes to
a thread that waits for one, which the accept loop only wakes; a new thread
is started only when none waits, and a thread that has waited `KEEP_S` for a
connection ends.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

KEEP_S = 60.0  # how long a thread with no connection waits for one before it ends


class ConnectionThreads:
    """Run `serve(request, address)` for each submitted connection, on a thread of its own."""

    def __init__(self, serve: Callable[[Any, Any], None], name: str, keep_s: float = KEEP_S) -> None:
        self._serve = serve
        self._name = name
        self._keep_s = keep_s
        self._queue: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Threads waiting for a connection, less the connections queued for them: the ones
        # free to take the next.  A thread ends on its own only while this is above zero, so
        # a queued connection always has a thread that will take it.
        self._free = 0
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def submit(self, request: Any, address: Any) -> None:
        """Hand a connection to a free thread, or start one for it if none is free (if that
        fails, the error is raised and the connection is left to the caller)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the connection threads are closed")
            if self._free:
                self._free -= 1
                self._queue.put((request, address))
                return
        t = threading.Thread(target=self._run, args=((request, address),), name=self._name, daemon=True)
        with self._lock:
            self._threads.add(t)
        try:
            t.start()
        except BaseException:
            with self._lock:
                self._threads.discard(t)
            raise

    @property
    def counts(self) -> tuple[int, int]:
        """(threads, of them free for the next connection)."""
        with self._lock:
            return len(self._threads), self._free

    def _run(self, first: tuple[Any, Any]) -> None:
        me = threading.current_thread()
        item: tuple[Any, Any] | None = first
        try:
            while item is not None:  # None: close()
                self._serve(*item)
                with self._lock:
                    self._free += 1
                item = self._next()
        finally:
            with self._lock:
                self._threads.discard(me)

    def _next(self) -> tuple[Any, Any] | None:
        """The next connection for this thread; None if it is to end."""
        while True:
            try:
                return self._queue.get(timeout=self._keep_s)
            except queue.Empty:
                with self._lock:
                    if self._free:  # no connection is on its way to this thread: end
                        self._free -= 1
                        return None
                # one was promised to a waiting thread, this one or another: wait for it

    def close(self, timeout_s: float) -> bool:
        """End the threads, waiting for each to finish its connection (at most `timeout_s`
        in all); False if some were still running.  Call once nothing is submitted any more."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
