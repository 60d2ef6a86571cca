"""Message channels: publish/subscribe between local processes.

A subscriber is a push function (in practice a connection's stream, whose
bounded queue and `lagged` notices are `server`'s); `publish` hands the
message to every subscriber of the channel without waiting for any of them,
and returns how many took it.  One that could not (its queue was full) is
counted as lagged; it learns how much it missed from its stream.  Nothing
is kept: a message with no subscriber is gone, as with a UNIX datagram.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ipcd.wire import jsonrpc

Push = Callable[[bytes], bool]  # one encoded `message` notification; False if it was dropped


class Subscription:
    """One connection's subscriptions: the channels it listens to and where to push."""

    def __init__(self, push: Push) -> None:
        self.push = push
        self.channels: set[str] = set()


class Channels:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self.published = 0
        self.delivered = 0
        self.lagged = 0

    def subscribe(self, sub: Subscription, channels: list[str]) -> list[str]:
        with self._lock:
            for ch in channels:
                self._subs.setdefault(ch, set()).add(sub)
                sub.channels.add(ch)
            return sorted(sub.channels)

    def unsubscribe(self, sub: Subscription, channels: list[str] | None = None) -> list[str]:
        """Drop `channels` (all if None) from `sub`; the channels unsubscribed from."""
        with self._lock:
            gone = sorted(sub.channels if channels is None else sub.channels & set(channels))
            for ch in gone:
                sub.channels.discard(ch)
                members = self._subs.get(ch)
                if members is not None:
                    members.discard(sub)
                    if not members:
                        del self._subs[ch]
            return gone

    def publish(self, channel: str, message: Any, uid: int, pid: int) -> int:
        with self._lock:
            members = list(self._subs.get(channel, ()))
        if not members:
            self.published += 1
            return 0
        note = {"channel": channel, "message": message, "published_at": time.time(), "uid": uid, "pid": pid}
        line = jsonrpc.to_bytes(jsonrpc.notification_line("message", note))  # encoded once for all
        reached = 0
        for sub in members:
            if sub.push(line):
                reached += 1
            else:
                self.lagged += 1
        self.published += 1
        self.delivered += reached
        return reached

    def names(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` channels with a subscriber that start with `prefix`, sorted."""
        with self._lock:
            found = [ch for ch in self._subs if ch.startswith(prefix)]
        return sorted(found)[:limit]

    def status(self) -> dict[str, Any]:
        with self._lock:
            subscribers = len({s for members in self._subs.values() for s in members})
            channels = len(self._subs)
        return {
            "channels": channels,
            "subscribers": subscribers,
            "published": self.published,
            "delivered": self.delivered,
            "lagged": self.lagged,
        }
