"""The IPC methods: kv.get/list/set/delete/watch, publish, subscribe, unsubscribe.

Thin: params and roles are declared here, the work is `kv`'s and
`channels`'.  Streams (kv.watch, subscribe) live as long as their
connection; closing it drops them at once.
"""

from __future__ import annotations

from typing import Any

from ipcd.control.app import Call, Deferred
from ipcd.control.registry import Param, Registry
from ipcd.control.streams import Stream
from ipcd.errors import LimitReached
from ipcd.state.channels import Channels, Subscription
from ipcd.state.kv import MAX_KEY_CHARS, KvStore, check_key
from ipcd.wire.jsonrpc import Raw, dumps

METHODS = Registry()


def _kv(call: Call) -> KvStore:
    return call.app.get(KvStore)


def _channels(call: Call) -> Channels:
    return call.app.get(Channels)


def _key(value: str) -> str:
    return check_key(value)


def _names(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("at least one channel")
    for v in values:
        if not 1 <= len(v) <= MAX_KEY_CHARS or not v.isprintable():
            raise ValueError(f"channel names are 1 to {MAX_KEY_CHARS} printable characters, not {v!r}")
    return values


def _prefix(value: str) -> str:
    if len(value) > MAX_KEY_CHARS:  # held for as long as the watch lasts: bounded, as a key is
        raise ValueError(f"at most {MAX_KEY_CHARS} characters, as a key (a longer prefix matches no key)")
    return value


KEY = Param("key", "string", required=True, check=_key, doc=f"1 to {MAX_KEY_CHARS} printable characters")


@METHODS.method("kv.get", role="read", doc="A key's value, version and expiry; -32003 if missing.", params=(KEY,))
def kv_get(call: Call, key: str) -> Raw:
    return Raw(_kv(call).get(key).to_json(key))


@METHODS.method(
    "kv.list",
    role="read",
    doc="The keys that start with `prefix`, sorted.",
    params=(Param("prefix", "string", default=""),),
)
def kv_list(call: Call, prefix: str) -> dict[str, Any]:
    keys = _kv(call).keys(prefix)
    cap = call.app.config.control.max_queued_bytes_per_connection
    size = sum(map(len, keys)) + 3 * len(keys)  # at least what the reply takes: refused before it is built
    if size > cap:
        raise LimitReached(
            f"{len(keys)} keys start with {prefix!r}: the reply would pass "
            f"max_queued_bytes_per_connection = {cap} bytes; list a longer prefix",
            "max_queued_bytes_per_connection",
            cap,
        )
    return {"keys": keys}


@METHODS.method(
    "kv.set",
    role="write",
    defers=True,
    doc="Set a key to any JSON value; `if_version` makes it compare-and-set (0: only if absent).",
    params=(
        KEY,
        Param("value", "any", required=True),
        Param("ttl_s", "number", min=0.001, max=10**9, doc="seconds until it expires"),
        Param("if_version", "integer", min=0, doc="-32004 unless the key is at this version"),
    ),
)
def kv_set(call: Call, key: str, value: Any, ttl_s: float | None, if_version: int | None) -> Deferred:
    p = call.peer
    item, change = _kv(call).set_later(key, value, ttl_s, if_version, p.uid, p.pid, p.comm)
    expires = "null" if item.expires_at is None else dumps(item.expires_at)
    result = f'{{"key":{dumps(key)},"version":{item.version},"expires_at":{expires}}}'
    return Deferred(change, Raw(result), change.hand_off)


@METHODS.method("kv.delete", role="write", defers=True, doc="Delete a key; -32003 if missing.", params=(KEY,))
def kv_delete(call: Call, key: str) -> Deferred:
    change = _kv(call).delete_later(key)
    return Deferred(change, {"deleted": True}, change.hand_off)


@METHODS.method(
    "kv.watch",
    role="read",
    stream=True,
    doc="Stream kv.change notifications (key, op: set/delete/expire, value, version) under `prefix`.",
    params=(Param("prefix", "string", default="", check=_prefix, doc=f"at most {MAX_KEY_CHARS} characters"),),
)
def kv_watch(call: Call, prefix: str) -> dict[str, Any]:
    stream = call.conn.open_stream("kv.watch")
    call.conn.on_close(_kv(call).watch(prefix, stream.push_line))
    return {"watching": prefix}


CHANNEL = Param("channel", "string", required=True, check=lambda v: _names([v])[0])


@METHODS.method(
    "publish",
    role="write",
    doc="Send `message` (any JSON) to the channel's subscribers; how many it reached.",
    params=(CHANNEL, Param("message", "any", required=True)),
)
def publish(call: Call, channel: str, message: Any) -> dict[str, Any]:
    return {"delivered": _channels(call).publish(channel, message, call.peer.uid, call.peer.pid)}


class StreamSubscription(Subscription):
    """A connection's subscription, pushing `message` notifications on its stream."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream.push_line)
        self.stream = stream


def _subscription(call: Call) -> StreamSubscription:
    """The connection's one subscription (and its stream), made on first use."""
    conn = call.conn
    channels = _channels(call)

    def make() -> StreamSubscription:
        sub = StreamSubscription(conn.open_stream("subscribe"))

        def drop() -> None:
            channels.unsubscribe(sub)

        conn.on_close(drop)
        return sub

    return conn.attach(StreamSubscription, make)


@METHODS.method(
    "subscribe",
    role="read",
    stream=True,
    doc="Receive `message` notifications (channel, message, published_at, uid, pid) from these channels.",
    params=(Param("channels", "strings", required=True, check=_names),),
)
def subscribe(call: Call, channels: list[str]) -> dict[str, Any]:
    sub = _subscription(call)
    # Each channel counts as a stream against max_streams_per_connection: what one connection holds is bounded.
    call.conn.weigh(sub.stream, len(sub.channels.union(channels)))
    return {"channels": _channels(call).subscribe(sub, channels)}


@METHODS.method(
    "channels",
    role="read",
    doc="The channels someone listens to now that start with `prefix` (at most 1000, sorted).",
    params=(Param("prefix", "string", default=""),),
)
def channels_list(call: Call, prefix: str) -> dict[str, Any]:
    return {"channels": _channels(call).names(prefix, MAX_CHANNEL_NAMES)}


MAX_CHANNEL_NAMES = 1000


@METHODS.method(
    "unsubscribe",
    role="read",
    doc="Stop receiving from `channels` (all of them if absent); the channels unsubscribed from.",
    params=(Param("channels", "strings"),),
)
def unsubscribe(call: Call, channels: list[str] | None) -> dict[str, Any]:
    conn = call.conn
    sub = conn.attachment(StreamSubscription)
    if sub is None:
        return {"channels": []}
    left = _channels(call).unsubscribe(sub, channels)
    if not sub.channels:
        sub.stream.close()
        conn.detach(StreamSubscription)
    else:
        conn.weigh(sub.stream, len(sub.channels))
    return {"channels": left}
