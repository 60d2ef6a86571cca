"""What the control connections together may hold: queued bytes, and requests being handled.

`QueueBudget` counts the bytes held for readers (`[control]
max_queued_bytes`): unfinished request lines, replies being written and
queued notifications.  `RequestGate` bounds the bytes of the requests over
`LARGE_REQUEST_BYTES` being parsed and handled at once (`[control]
max_inflight_request_bytes`): a line of JSON becomes Python objects of up
to about 25 times its size (`[{},{},...]`), so what is handled at once
must be bounded, not only each line.  In both, a non-admin uid may hold at
most half, so that one user cannot take it all, and an admin (uid None) is
counted, never refused.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

SMALL_BYTES = 64 * 1024  # a reply this small never waits for the budget
LARGE_REQUEST_BYTES = 4096  # a request line longer than this goes through the gate


class QueueBudget:
    """Bytes held for the readers of all connections together (`[control] max_queued_bytes`).

    What counts: a reply being written and the notifications queued in the
    outboxes, until the kernel took them.  A non-admin uid may hold at most
    half of it, so that one user whose connections never read cannot take
    it all (a uid that holds nothing is held only by the total, so that a
    line longer than the half still goes).  An admin's bytes (`uid` None)
    are counted, never refused.  A refused taker may leave `on_room`, called
    (once) at the next give: when someone's reader has read.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit  # read at each take: a reload applies at once
        self._lock = threading.Lock()
        self.held = 0
        self.refused = 0
        self._by_uid: dict[int, int] = {}
        self._waiting: list[Callable[[], None]] = []

    def take(self, uid: int | None, size: int, force: bool = False, on_room: Callable[[], None] | None = None) -> bool:
        with self._lock:
            mine = self._by_uid.get(uid, 0) if uid is not None else 0
            if uid is not None and not force:
                limit = self._limit()
                if self.held + size > limit or (mine and mine + size > limit // 2):
                    self.refused += 1
                    if on_room is not None:
                        self._waiting.append(on_room)
                    return False
            self.held += size
            if uid is not None:
                self._by_uid[uid] = mine + size
            return True

    def give(self, uid: int | None, size: int) -> None:
        if not size:
            return
        with self._lock:
            self.held -= size
            if uid is not None:
                left = self._by_uid.get(uid, 0) - size
                if left > 0:
                    self._by_uid[uid] = left
                else:
                    self._by_uid.pop(uid, None)
            waiting, self._waiting = self._waiting, []
        for fn in waiting:
            fn()

    def held_by(self, uid: int) -> int:
        with self._lock:
            return self._by_uid.get(uid, 0)


class RequestGate:
    """Bytes of large requests handled at once: at most `limit()`, a non-admin uid half.

    A request waits until it fits; one always fits an empty gate, whatever
    its size, and a uid that holds nothing is held only by the total.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._cv = threading.Condition()
        self.busy = 0  # bytes
        self.waited = 0  # requests that had to wait
        self._by_uid: dict[int, int] = {}

    def _fits(self, uid: int | None, size: int) -> bool:
        if not self.busy:
            return True
        limit = self._limit()
        if self.busy + size > limit:
            return False
        mine = self._by_uid.get(uid, 0) if uid is not None else 0
        return not mine or mine + size <= limit // 2

    @contextlib.contextmanager
    def enter(self, uid: int | None, size: int) -> Iterator[None]:
        with self._cv:
            if not self._fits(uid, size):
                self.waited += 1
                while not self._fits(uid, size):
                    self._cv.wait()
            self.busy += size
            if uid is not None:
                self._by_uid[uid] = self._by_uid.get(uid, 0) + size
        try:
            yield
        finally:
            with self._cv:
                self.busy -= size
                if uid is not None:
                    left = self._by_uid[uid] - size
                    if left:
                        self._by_uid[uid] = left
                    else:
                        del self._by_uid[uid]
                self._cv.notify_all()
