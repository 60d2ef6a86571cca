"""`logs.query` and `logs.follow`: reading the log over the control socket.

A non-admin sees only entries whose `sender_uid` is its own, as journalctl
does; asking for another uid is refused.  The params are read by `filters`;
a query runs within `[control] query_timeout_s` and its reply within
`max_queued_bytes_per_connection` (`query`); `logs.follow` registers a
cursor with the one thread that serves every follower (`follow`).
"""

from __future__ import annotations

import time
from typing import Any

from ipcd.control.app import App, Call
from ipcd.control.registry import Param, Registry
from ipcd.errors import InvalidParams, PermissionDenied
from ipcd.logs.filters import MAX_LIMIT, MAX_NAMES, Filters, make_filters, parse_names, parse_priority, parse_time
from ipcd.logs.follow import Follower, FollowHub, FollowLimits
from ipcd.logs.grep import MAX_PATTERN_CHARS, compile_grep
from ipcd.logs.query import Reader
from ipcd.wire import jsonrpc

METHODS = Registry()


def _time(value: Any) -> Any:
    parse_time(value, time.time())  # checked now, resolved per query
    return value


def _priority(value: Any) -> Any:
    parse_priority(value)
    return value


def _regex(value: str) -> str:
    compile_grep(value)
    return value


def _names(value: Any) -> Any:
    parse_names(value)
    return value


FILTER_PARAMS = (
    Param(
        "since",
        "number|string",
        check=_time,
        doc="entries received at or after: epoch seconds, 2026-11-27 10:00[:00] (local), -5m, 2h ago, "
        "today, yesterday, now, @EPOCH",
    ),
    Param("until", "number|string", check=_time, doc="entries received at or before; as since"),
    Param(
        "priority",
        "integer|string",
        check=_priority,
        doc="0-7 or a name: that level and more severe; or a range FROM..TO (inclusive, either order), "
        "FROM.. (down to debug), ..TO (from emerg)",
    ),
    Param("ident", "string|strings", check=_names, doc=f"an ident, or a list of at most {MAX_NAMES}"),
    Param("pid", "integer", min=0, doc="the sender's trusted pid (sender_pid)"),
    Param("uid", "integer", min=0, doc="the sender's trusted uid (sender_uid); other uids: admins only"),
    Param(
        "grep",
        "string",
        check=_regex,
        doc=f"an RE2 pattern matched against the message, ignoring case unless it has a capital letter; "
        f"at most {MAX_PATTERN_CHARS} characters",
    ),
)


# New params go last: a plain command (`logs.query 0 0 err`) passes params by position.
UNIT = Param(
    "unit",
    "string|strings",
    check=_names,
    doc=f"the sender's systemd unit (sender_unit), or a list of at most {MAX_NAMES}",
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


def _pool_uid(call: Call) -> int | None:
    """Whose share of the reader pool a call takes: admins' calls are not counted."""
    return None if call.peer.role == "admin" else call.peer.uid


@METHODS.method(
    "logs.query",
    role="read",
    doc="Log entries in id order: the newest `limit` (below `before_id` if given), "
    "or with `after_id` the oldest `limit` after it.",
    params=(
        *FILTER_PARAMS,
        Param("limit", "integer", default=100, min=1, max=MAX_LIMIT, doc=f"at most this many entries (1-{MAX_LIMIT})"),
        Param("after_id", "integer", min=0, doc="only entries with a larger id: the oldest first (paging forward)"),
        UNIT,
        Param("before_id", "integer", min=0, doc="only entries with a smaller id: the newest first (paging back)"),
    ),
)
def logs_query(call: Call, limit: int, after_id: int | None, before_id: int | None, **params: Any) -> jsonrpc.Raw:
    f = _filters(call, {**params, "after_id": after_id, "before_id": before_id}, limit)
    cfg = call.app.config.control
    text = call.app.get(Reader).query_json(f, cfg.query_timeout_s, cfg.max_queued_bytes_per_connection, _pool_uid(call))
    return jsonrpc.Raw(text)


FILTER_BYTES_PER_STREAM = 1024  # streams are budgeted at about 1.5 KiB each (README "Memory")


def _limits(app: App) -> Any:
    def limits() -> FollowLimits:
        cfg = app.config  # read at each turn: a reload applies to live followers
        return FollowLimits(int(cfg.log.follow_max_lag), float(cfg.control.query_timeout_s))

    return limits


@METHODS.method(
    "logs.follow",
    role="read",
    stream=True,
    doc="Stream log entries (logs.entry notifications) in id order as they are stored: "
    "first the newest `backlog` ones, or every one after `after_id`.",
    params=(
        *FILTER_PARAMS,
        Param("backlog", "integer", default=0, min=0, max=MAX_LIMIT, doc="send the newest this many first"),
        UNIT,
        Param(
            "after_id",
            "integer",
            min=0,
            doc="send every entry after this id first (a reconnecting follower: no gap, no repeat)",
        ),
    ),
)
def logs_follow(call: Call, backlog: int, after_id: int | None, **params: Any) -> dict[str, Any]:
    if backlog and after_id is not None:
        raise InvalidParams("give backlog or after_id, not both", "after_id")
    f = _filters(call, params, 1)
    hub = call.app.get(FollowHub)
    head = hub.head  # committed up to here: ids are given in commit order
    cursor, sent_back = head, 0
    stream = call.conn.open_stream("logs.follow")  # room for it first: a refused follow reads nothing
    try:  # held as long as the follow lasts: one stream, plus one for each KiB its filters' texts take
        call.conn.weigh(stream, 1 + f.held_bytes() // FILTER_BYTES_PER_STREAM)
        if after_id is not None:
            cursor = after_id
        elif backlog:
            timeout_s = call.app.config.control.query_timeout_s
            first, sent_back = call.app.get(Reader).backlog_start(f, backlog, head, timeout_s, _pool_uid(call))
            if first is not None:
                cursor = first - 1
    except Exception:
        stream.close()
        raise
    follower = Follower(f, stream, cursor, _limits(call.app))
    hub.add(follower)
    call.conn.on_close(lambda: hub.remove(follower))
    return {"following": True, "backlog": sent_back}
