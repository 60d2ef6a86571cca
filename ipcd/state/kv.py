"""Shared key/value state: versions, compare-and-set, TTLs, watchers.

Keys live in memory, guarded by one lock, and in the store's `kv` table,
written through the store's one writer: a `set` or `delete` answers only
once it is committed, so an acknowledged write survives kill -9.  Each key
records its version (1, 2, ... per key; compare-and-set with `if_version`,
0 meaning "only if absent"), who set it (uid, pid, command) and when.  An
expired key is gone for readers at once; `purge_expired` (called every
second by the daemon) removes it for good and tells the watchers.  Watchers
see the changes in the order they were made, each once it is committed.
Roles, params and the wire are `kvmethods`' business.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipcd.config import KvConfig
from ipcd.errors import Conflict, InternalError, InvalidParams, LimitReached, NotFound

MAX_KEY_CHARS = 256


@dataclass
class Item:
    value: Any
    version: int
    expires_at: float | None
    set_at: float
    set_by_uid: int | None
    set_by_pid: int | None
    set_by_comm: str | None

    def alive(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def to_json(self, key: str) -> dict[str, Any]:
        return {
            "key": key,
            "value": self.value,
            "version": self.version,
            "expires_at": self.expires_at,
            "set_at": self.set_at,
            "set_by": {"uid": self.set_by_uid, "pid": self.set_by_pid, "command": self.set_by_comm},
        }


def check_key(key: str, what: str = "key") -> str:
    if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise InvalidParams(f"invalid param {what!r}: 1 to {MAX_KEY_CHARS} printable characters", what)
    return key


Watcher = Callable[[dict[str, Any]], bool]


class KvStore:
    def __init__(self, writer: Any, cfg: KvConfig) -> None:
        self.writer = writer
        self.cfg = cfg
        self._lock = threading.Lock()
        self._items: dict[str, Item] = {}
        self._watchers: dict[int, tuple[str, Watcher]] = {}
        self._next_watch = 0
        # The last version of keys deleted or purged (at most max_keys of
        # them, for this run of the daemon): a key made again goes on from it.
        self._gone: dict[str, int] = {}
        # Changes are numbered under _lock and told to watchers in that
        # order, each after its commit: commits finish in order, but the
        # threads that waited for them wake in any order.
        self._seq = 0
        self._told = 0
        self._told_cv = threading.Condition()
        self.sets = 0
        self.deletes = 0
        self.expired = 0
        # Loaded on the starting thread, before the writer's thread runs.
        for key, value, version, expires_at, set_at, uid, pid, comm in writer.conn.execute(
            "SELECT key, value, version, expires_at, set_at, set_by_uid, set_by_pid, set_by_comm FROM kv"
        ):
            self._items[key] = Item(json.loads(value), version, expires_at, set_at, uid, pid, comm)

    # -- reading ---------------------------------------------------------------

    def get(self, key: str) -> Item:
        now = time.time()
        with self._lock:
            item = self._items.get(key)
            if item is None or not item.alive(now):
                raise NotFound(f"no key {key!r}", {"key": key})
            return item

    def keys(self, prefix: str = "") -> list[str]:
        now = time.time()
        with self._lock:
            return sorted(k for k, it in self._items.items() if k.startswith(prefix) and it.alive(now))

    def __len__(self) -> int:
        return len(self._items)

    # -- writing ---------------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl_s: float | None, if_version: int | None, uid: int, pid: int, comm: str | None
    ) -> Item:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        size = len(encoded.encode("utf-8", "surrogatepass"))
        if size > self.cfg.max_value_bytes:
            raise LimitReached(
                f"value is {size} bytes; kv.max_value_bytes = {self.cfg.max_value_bytes}",
                "max_value_bytes",
                self.cfg.max_value_bytes,
            )
        now = time.time()
        with self._lock:
            old = self._items.get(key)
            current = old.version if old is not None and old.alive(now) else 0
            if if_version is not None and if_version != current:
                raise Conflict(
                    f"key {key!r} is at version {current}, not {if_version}",
                    {"key": key, "version": current, "if_version": if_version},
                )
            if current == 0 and len(self._items) >= self.cfg.max_keys and key not in self._items:
                raise LimitReached(
                    f"{len(self._items)} keys; kv.max_keys = {self.cfg.max_keys}", "max_keys", self.cfg.max_keys
                )
            # Versions keep growing across expiry and delete, so that a stale
            # if_version never matches a new key of the same name by accident.
            version = (old.version if old is not None else self._gone.pop(key, 0)) + 1
            item = Item(value, version, now + ttl_s if ttl_s else None, now, uid, pid, comm)
            self._items[key] = item
            op = self.writer.submit(
                lambda c: c.execute(
                    "INSERT OR REPLACE INTO kv (key, value, version, expires_at, set_at, set_by_uid, set_by_pid,"
                    " set_by_comm) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, encoded, version, item.expires_at, now, uid, pid, comm),
                )
            )
            seq = self._next_seq()  # after submit: a change that never queued never blocks the others
        try:
            self._persisted(op, key, old, item)
        except BaseException:
            self._tell(seq, None)
            raise
        self.sets += 1
        self._tell(seq, {"key": key, "op": "set", "value": value, "version": version})
        return item

    def delete(self, key: str) -> None:
        now = time.time()
        with self._lock:
            old = self._items.get(key)
            if old is None or not old.alive(now):
                raise NotFound(f"no key {key!r}", {"key": key})
            del self._items[key]
            self._remember(key, old.version)
            op = self.writer.submit(lambda c: c.execute("DELETE FROM kv WHERE key = ?", (key,)))
            seq = self._next_seq()
        try:
            self._persisted(op, key, old, None)
        except BaseException:
            self._tell(seq, None)
            raise
        self.deletes += 1
        self._tell(seq, {"key": key, "op": "delete", "value": None, "version": old.version})

    def _persisted(self, op: Any, key: str, old: Item | None, new: Item | None) -> None:
        """Wait for the commit; if it failed, undo the change in memory (if still ours)."""
        try:
            op.wait()
        except Exception as e:
            with self._lock:
                if self._items.get(key) is new:
                    if old is None:
                        self._items.pop(key, None)
                    else:
                        self._items[key] = old
            raise InternalError(f"the store could not be written, nothing changed: {e}") from None

    def purge_expired(self) -> int:
        now = time.time()
        with self._lock:
            gone = [(k, it) for k, it in self._items.items() if not it.alive(now)]
            for k, it in gone:
                del self._items[k]
                self._remember(k, it.version)
            first = self._seq + 1
            self._seq += len(gone)
        if not gone:
            return 0
        rows = [(k, it.version) for k, it in gone]
        try:
            # By version: a key set again meanwhile has a new one, and stays.
            self.writer.submit(lambda c: c.executemany("DELETE FROM kv WHERE key = ? AND version = ?", rows))
            self.expired += len(gone)
        finally:
            for seq, (k, it) in enumerate(gone, first):
                self._tell(seq, {"key": k, "op": "expire", "value": None, "version": it.version})
        return len(gone)

    def _remember(self, key: str, version: int) -> None:
        """Keep a gone key's last version (under _lock), forgetting the oldest past max_keys."""
        self._gone[key] = version
        while len(self._gone) > self.cfg.max_keys:
            del self._gone[next(iter(self._gone))]

    # -- watchers --------------------------------------------------------------

    def watch(self, prefix: str, push: Watcher) -> int:
        with self._lock:
            self._next_watch += 1
            self._watchers[self._next_watch] = (prefix, push)
            return self._next_watch

    def unwatch(self, handle: int) -> None:
        with self._lock:
            self._watchers.pop(handle, None)

    def _next_seq(self) -> int:
        """Number a change (under _lock)."""
        self._seq += 1
        return self._seq

    def _tell(self, seq: int, change: dict[str, Any] | None) -> None:
        """Push change number `seq` to the watchers once every earlier one is out.

        None: the change did not happen (its commit failed); only its turn passes.
        Pushes never block (a stream's queue drops and counts instead), so the
        wait is only for other writers' threads to reach this point.
        """
        with self._told_cv:
            while self._told != seq - 1:
                self._told_cv.wait()
            try:
                if change is not None:
                    for prefix, push in list(self._watchers.values()):
                        if change["key"].startswith(prefix):
                            push(change)
            finally:
                self._told = seq
                self._told_cv.notify_all()

    def status(self) -> dict[str, Any]:
        return {
            "keys": len(self._items),
            "watchers": len(self._watchers),
            "sets": self.sets,
            "deletes": self.deletes,
            "expired": self.expired,
        }
