"""`logs.query` and `logs.follow`: reading the log over the control socket.

A non-admin sees only entries whose `sender_uid` is its own, as journalctl
does; asking for another uid is refused.  `logs.follow` sends its backlog,
then each new entry as a `logs.entry` notification, in id order with no gap
and no repeat: a follower is a cursor over the store (see `Follower`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ipcd.control.app import Call
from ipcd.control.registry import Param, Registry
from ipcd.errors import InvalidParams, PermissionDenied
from ipcd.logs.query import MAX_LIMIT, Filters, FollowHub, Reader, compile_grep, make_filters, parse_time
from ipcd.wire.priority import severity

log = logging.getLogger("ipcd")

METHODS = Registry()


def _time(value: Any) -> Any:
    parse_time(value, time.time())  # checked now, resolved per query
    return value


def _regex(value: str) -> str:
    try:
        compile_grep(value)
    except re.error as e:
        raise ValueError(f"bad regular expression: {e}") from None
    return value


FILTER_PARAMS = (
    Param("since", "number|string", check=_time, doc="epoch seconds, ISO 8601, -5m, today..."),
    Param("until", "number|string", check=_time),
    Param("priority", "integer|string", check=severity, doc="this level and more severe: 0-7 or a name"),
    Param("ident", "string"),
    Param("pid", "integer", min=0, doc="the sender's trusted pid"),
    Param("uid", "integer", min=0, doc="the sender's trusted uid (admins only, for other uids)"),
    Param("grep", "string", check=_regex, doc="a regular expression; smart case"),
)


def _filters(call: Call, params: dict[str, Any], limit: int) -> Filters:
    peer = call.peer
    forced = None
    if peer.role != "admin":
        if params.get("uid") is not None and params["uid"] != peer.uid:
            raise PermissionDenied("only admins may read other users' log entries", "admin")
        forced = peer.uid
    try:
        return make_filters({**params, "limit": limit}, time.time(), forced)
    except ValueError as e:
        raise InvalidParams(str(e)) from None


def _reader(call: Call) -> Reader:
    return call.app.get(Reader)


@METHODS.method(
    "logs.query",
    role="read",
    doc="Log entries: the newest `limit`, or the oldest `limit` after `after_id`; always in id order.",
    params=(
        *FILTER_PARAMS,
        Param("limit", "integer", default=100, min=1, max=MAX_LIMIT),
        Param("after_id", "integer", min=0, doc="page forward from this id"),
    ),
)
def logs_query(call: Call, limit: int, after_id: int | None, **params: Any) -> dict[str, Any]:
    f = _filters(call, {**params, "after_id": after_id}, limit)
    return {"entries": _reader(call).query(f)}


class Follower:
    """One `logs.follow` stream: a cursor over the store, not a copy of it.

    The writer only says how far it has committed (`wake`); the follower's
    own thread reads on from its cursor, in id order, a page at a time, and
    writes to its connection, waiting while the connection's queue is full.
    So a reader that keeps up misses nothing however large a commit, one that
    stops reading costs no memory and never slows intake, and one that falls
    more than `follow_max_lag` entries behind skips ahead and is told how
    many entries it missed (a `lagged` notification).
    """

    PAGE = 256

    def __init__(self, filters: Filters, reader: Reader, stream: Any, cursor: int, max_lag: Callable[[], int]) -> None:
        self.filters = filters
        self.reader = reader
        self.stream = stream
        self.cursor = cursor  # the last id this follower has passed
        self.head = cursor  # the last id committed, as far as it knows
        self.max_lag = max_lag
        self.missed = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ipcd-follow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, last_id: int) -> None:
        self.head = max(self.head, last_id)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            try:
                self._catch_up()
            except Exception:  # a store that cannot be read now: try again at the next commit
                log.exception("a log follower could not read the store")

    def _catch_up(self) -> None:
        while not self._closed and self.cursor < self.head:
            limit = self.max_lag()
            if self.head - self.cursor > limit:
                skip_to = self.head - limit
                n = self.reader.count(replace(self.filters, after_id=self.cursor, until_id=skip_to))
                self.cursor = skip_to
                if n:
                    self.missed += n
                    self.stream.push("lagged", {"stream": "logs.follow", "missed": n}, block=True)
            head = self.head  # the page can hold nothing committed after this
            page = self.reader.query(replace(self.filters, after_id=self.cursor, until_id=head, limit=self.PAGE))
            for entry in page:
                if not self.stream.push("logs.entry", entry, block=True):
                    return  # the connection is gone
            # A short page: nothing else up to `head` matched.
            self.cursor = page[-1]["id"] if len(page) == self.PAGE else head


@METHODS.method(
    "logs.follow",
    role="read",
    stream=True,
    doc="Stream log entries (logs.entry notifications) as they are stored; `backlog` older ones first.",
    params=(*FILTER_PARAMS, Param("backlog", "integer", default=0, min=0, max=MAX_LIMIT)),
)
def logs_follow(call: Call, backlog: int, **params: Any) -> dict[str, Any]:
    f = _filters(call, params, max(backlog, 1))
    hub = call.app.get(FollowHub)
    reader = _reader(call)
    head = hub.head  # committed up to here: ids are given in commit order
    cursor, sent_back = head, 0
    if backlog:
        newest = [e for e in reader.query(replace(f, limit=backlog)) if e["id"] <= head]
        if newest:
            cursor, sent_back = newest[0]["id"] - 1, len(newest)
    stream = call.conn.open_stream("logs.follow")
    follower = Follower(f, reader, stream, cursor, lambda: int(call.app.config.log.follow_max_lag))
    hub.add(follower)

    def stop() -> None:
        hub.remove(follower)
        follower.close()

    call.conn.on_close(stop)
    follower.start()
    follower.wake(hub.head)  # what was committed while it registered, too
    return {"following": True, "backlog": sent_back}
