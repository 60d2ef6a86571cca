"""`logs.query` and `logs.follow`: reading the log over the control socket.

A non-admin sees only entries whose `sender_uid` is its own, as journalctl
does; asking for another uid is refused.  `logs.follow` sends its backlog,
then each new entry as a `logs.entry` notification, in id order with no gap
and no repeat: the follower is registered before the backlog is read, and
what arrives meanwhile is held back and de-duplicated by id.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import InvalidParams, PermissionDenied
from .logparse import severity
from .logquery import MAX_LIMIT, Filters, FollowHub, Reader, compile_grep, make_filters, parse_time
from .logstore import row_dict
from .methods import REGISTRY, Call, Param


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
    return call.app.services["reader"]  # type: ignore[no-any-return]


@REGISTRY.method(
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
    """One `logs.follow` stream: gated until its backlog is out."""

    def __init__(self, filters: Filters, push: Callable[[dict[str, Any]], bool]) -> None:
        self.filters = filters
        self.push = push
        self._lock = threading.Lock()
        self._held: list[tuple[Any, ...]] | None = []

    def deliver(self, row: tuple[Any, ...]) -> None:
        if not self.filters.matches(row):
            return
        with self._lock:
            if self._held is not None:
                self._held.append(row)
            else:
                self.push(row_dict(row))

    def open(self, backlog: list[dict[str, Any]]) -> None:
        with self._lock:
            for entry in backlog:
                self.push(entry)
            after = backlog[-1]["id"] if backlog else 0
            held, self._held = self._held or [], None
            for row in held:
                if row[0] > after:
                    self.push(row_dict(row))


@REGISTRY.method(
    "logs.follow",
    role="read",
    stream=True,
    doc="Stream log entries (logs.entry notifications) as they are stored; `backlog` older ones first.",
    params=(*FILTER_PARAMS, Param("backlog", "integer", default=0, min=0, max=MAX_LIMIT)),
)
def logs_follow(call: Call, backlog: int, **params: Any) -> dict[str, Any]:
    f = _filters(call, params, max(backlog, 1))
    hub: FollowHub = call.app.services["follow_hub"]
    stream = call.conn.open_stream("logs.follow")
    follower = Follower(f, lambda entry: stream.push("logs.entry", entry))
    hub.add(follower)
    call.conn.on_close(lambda: hub.remove(follower))
    entries = _reader(call).query(f) if backlog else []
    follower.open(entries)
    return {"following": True, "backlog": len(entries)}
