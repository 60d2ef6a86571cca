"""Shared key/value state: versions, compare-and-set, TTLs, watchers.

Keys live in memory, guarded by one lock, and in kv.db (`kvdb`), whose one
writer commits whatever is queued at once (group commit): a `set` or
`delete` answers only once its commit is done, so an acknowledged write
survives kill -9.  Versions are given, and compare-and-set (`if_version`, 0
meaning "only if absent") decided, under the lock, in the order the writes
then reach the disk: of racing writers with the same `if_version`, exactly
one wins.  Values are kept as their JSON text, as they arrived and as they
go out again (`kv.get` splices it into the reply), so a value costs its
size, not a tree of Python objects.  An expired key is gone for readers at
once; `purge_expired` (every second) removes it for good.  Watchers are
indexed by prefix: a write costs a lookup per prefix of its key plus the
watchers that match, never a look at every watcher; a change is encoded
once, whatever the number of its watchers.  Roles, params and the
wire are `methods`' business.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipcd.config import KvConfig
from ipcd.errors import Conflict, InternalError, InvalidParams, LimitReached, NotFound, RpcError
from ipcd.state.kvdb import DELETE, DELETE_VERSION, UPSERT, Batch, KvDb, Write
from ipcd.wire.jsonrpc import MAX_DEPTH, Raw, dumps, notification_line, to_bytes, too_deep

MAX_KEY_CHARS = 256


@dataclass(slots=True)
class Item:
    value: str  # JSON text
    size: int  # its UTF-8 bytes
    version: int
    expires_at: float | None
    set_at: float
    set_by_uid: int | None
    set_by_pid: int | None
    set_by_comm: str | None
    tail: str | None = None  # the kv.get result after the value, once asked (an item is never changed)

    def alive(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def to_json(self, key: str) -> str:
        """The `kv.get` result, as JSON text, the value spliced in as stored.

        What follows the value is made once per item (an item is replaced,
        never changed) and kept: a few numbers and a command name, about 150
        bytes, never a second copy of the value or of the key.
        """
        tail = self.tail
        if tail is None:
            by = dumps({"uid": self.set_by_uid, "pid": self.set_by_pid, "command": self.set_by_comm})
            tail = self.tail = (
                f',"version":{self.version},"expires_at":{dumps(self.expires_at)},'
                f'"set_at":{dumps(self.set_at)},"set_by":{by}}}'
            )
        return f'{{"key":{dumps(key)},"value":{self.value}{tail}'


def check_key(key: str, what: str = "key") -> str:
    if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise InvalidParams(f"invalid param {what!r}: 1 to {MAX_KEY_CHARS} printable characters", what)
    return key


def change_line(key: str, op: str, value: str | None, version: int) -> bytes:
    """A `kv.change` notification, encoded (once for all its watchers)."""
    params = (
        f'{{"key":{json.dumps(key, ensure_ascii=False)},"op":"{op}","value":{value or "null"},"version":{version}}}'
    )
    return to_bytes(notification_line("kv.change", Raw(params)))


Watcher = Callable[[bytes], Any]  # takes a kv.change notification, encoded


class Watchers:
    """Watchers by prefix: who hears of a change to `key` is found from its prefixes."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, dict[int, Watcher]] = {}
        self._next = 0
        self.count = 0

    def add(self, prefix: str, push: Watcher) -> int:
        self._next += 1
        self._by_prefix.setdefault(prefix, {})[self._next] = push
        self.count += 1
        return self._next

    def remove(self, prefix: str, handle: int) -> None:
        members = self._by_prefix.get(prefix)
        if members is not None and members.pop(handle, None) is not None:
            self.count -= 1
            if not members:
                del self._by_prefix[prefix]

    def matching(self, key: str) -> list[Watcher]:
        if not self._by_prefix:
            return []
        out: list[Watcher] = []
        by_prefix = self._by_prefix
        for n in range(len(key) + 1):
            members = by_prefix.get(key[:n])
            if members:
                out.extend(members.values())
        return out


class Change(Write):
    """A set or delete, applied in memory and queued for kv.db: call it to wait for its commit.

    One object per write, made under the store's lock: the row for kv.db,
    what `undo` puts back if the commit fails, what `after` tells the
    watchers once it is committed.
    """

    __slots__ = ("store", "batch", "key", "item", "old", "answer")

    def __init__(
        self, store: KvStore, sql: str, params: tuple[Any, ...], key: str, item: Item | None, old: Item | None
    ) -> None:
        # Write's fields, set here (one call less per write: this is the hot path of kv.set)
        self.sql, self.params, self.many, self.on_undo, self.on_after = sql, params, False, None, None
        self.error: BaseException | None = None
        self.done = False
        self.reply: Callable[[BaseException | None], None] | None = None
        self.store = store
        self.key = key
        self.item = item  # None: a delete
        self.old = old
        self.batch: Batch | None = None
        self.answer: Callable[[RpcError | None], None] | None = None

    def undo(self) -> None:
        self.store._undo(self.key, self.item, self.old)

    def after(self) -> None:
        """Committed: counted, and told to the watchers (on the committing thread, one commit at a time)."""
        if self.item is not None:
            self.store.sets += 1
        else:
            self.store.deletes += 1
        if not self.store._watchers.count:  # the common case: nobody watches anything
            return
        if self.item is not None:
            self.store._tell(self.key, "set", self.item)
        else:
            self.store._tell(self.key, "delete", self.old)  # type: ignore[arg-type]

    def __call__(self) -> None:
        """Return once committed; -32603 if the commit failed (the change undone)."""
        assert self.batch is not None
        try:
            self.store.db.commit(self.batch)
        except Exception as e:
            raise _not_written(e) from None
        if self.error is not None:  # the others of its commit went through; this one did not
            raise _not_written(self.error)

    def hand_off(self, answer: Callable[[RpcError | None], None]) -> bool:
        """Have `answer` called once committed (with None, or the -32603 error), on the thread that
        commits it, instead of waiting; False if it is committed already (call it then)."""
        assert self.batch is not None
        self.answer = answer
        if not self.store.db.hand_off(self, self.batch, self._finished):
            self.answer = None  # it refers back to this write: no cycle left for the gc
            return False
        return True

    def _finished(self, error: BaseException | None) -> None:
        answer, self.answer = self.answer, None  # it refers back to this write: no cycle left for the gc
        assert answer is not None
        if error is None:
            answer(None)
        else:
            answer(_not_written(error))


def _not_written(error: BaseException) -> InternalError:
    return InternalError(f"the store could not be written, nothing changed: {error}")


class KvStore:
    def __init__(self, db: KvDb, cfg: KvConfig) -> None:
        self.db = db
        self.cfg = cfg
        self._lock = threading.Lock()
        self._items: dict[str, Item] = {}
        self._bytes = 0  # of the values, together
        self._watchers = Watchers()
        # The last version of keys deleted or purged (at most max_keys of
        # them, for this run of the daemon): a key made again goes on from it.
        self._gone: dict[str, int] = {}
        self.sets = 0
        self.deletes = 0
        self.expired = 0
        self.skipped: list[str] = []  # rows that could not be loaded
        self._load()

    def _load(self) -> None:
        """Every row of kv.db; a row that cannot be used is skipped and reported, never fatal."""
        for key, value, version, expires_at, set_at, uid, pid, comm in self.db.rows():
            try:
                check_key(key)
                checked = _checked_json(value)
            except (InvalidParams, ValueError) as e:
                self.skipped.append(f"{key!r}: {e}")
                continue
            self._items[key] = Item(checked, _size(checked), version, expires_at, set_at, uid, pid, comm)
            self._bytes += self._items[key].size

    # -- reading ---------------------------------------------------------------

    def get(self, key: str) -> Item:
        item = self._items.get(key)  # a dict read is atomic: no lock, no wait behind a writer
        if item is None or not item.alive(time.time()):
            raise NotFound(f"no key {key!r}", {"key": key})
        return item

    def keys(self, prefix: str = "") -> list[str]:
        now = time.time()
        items = list(self._items.items())
        return sorted(k for k, it in items if k.startswith(prefix) and it.alive(now))

    def __len__(self) -> int:
        return len(self._items)

    # -- writing ---------------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl_s: float | None, if_version: int | None, uid: int, pid: int, comm: str | None
    ) -> Item:
        item, wait = self.set_later(key, value, ttl_s, if_version, uid, pid, comm)
        wait()
        return item

    def set_later(
        self, key: str, value: Any, ttl_s: float | None, if_version: int | None, uid: int, pid: int, comm: str | None
    ) -> tuple[Item, Change]:
        """Apply a set in memory and queue it for kv.db; `wait()` returns once it is committed.

        Until then it is not acknowledged: the caller answers after `wait`
        (which raises -32603 if the commit failed, the set undone).  Waiting
        later, not at once, lets a caller's next writes join the same commit.
        """
        encoded, size = _encode(value, self.cfg.max_value_bytes)
        now = time.time()
        with self._lock:
            old = self._items.get(key)
            current = old.version if old is not None and old.alive(now) else 0
            if if_version is not None and if_version != current:
                raise Conflict(
                    f"key {key!r} is at version {current}, not {if_version}",
                    {"key": key, "version": current, "if_version": if_version},
                )
            self._check_room(key, old, size)
            # Versions keep growing across expiry and delete, so that a stale
            # if_version never matches a new key of the same name by accident.
            version = (old.version if old is not None else self._gone.pop(key, 0)) + 1
            item = Item(encoded, size, version, now + ttl_s if ttl_s else None, now, uid, pid, comm)
            self._put(key, item)
            change = Change(self, UPSERT, (key, encoded, version, item.expires_at, now, uid, pid, comm), key, item, old)
            change.batch = self.db.submit(change)
            if change.error is not None:  # refused at once (the store is closing): as if never made
                self._put(key, old)
                if old is None and version > 1:
                    self._gone[key] = version - 1
        return item, change

    def delete(self, key: str) -> None:
        self.delete_later(key)()

    def delete_later(self, key: str) -> Change:
        """Delete in memory and queue it for kv.db; what it returns waits for the commit (as `set_later`)."""
        now = time.time()
        with self._lock:
            old = self._items.get(key)
            if old is None or not old.alive(now):
                raise NotFound(f"no key {key!r}", {"key": key})
            self._put(key, None)
            self._remember(key, old.version)
            change = Change(self, DELETE, (key,), key, None, old)
            change.batch = self.db.submit(change)
            if change.error is not None:  # refused at once (the store is closing): as if never made
                self._put(key, old)
                self._gone.pop(key, None)
        return change

    def _check_room(self, key: str, old: Item | None, size: int) -> None:
        cfg = self.cfg
        if old is None and len(self._items) >= cfg.max_keys:
            raise LimitReached(f"{len(self._items)} keys; kv.max_keys = {cfg.max_keys}", "max_keys", cfg.max_keys)
        total = self._bytes - (old.size if old is not None else 0) + size
        if total > cfg.max_bytes:
            raise LimitReached(
                f"all values together would be {total} bytes; kv.max_bytes = {cfg.max_bytes}",
                "max_bytes",
                cfg.max_bytes,
            )

    def _put(self, key: str, item: Item | None) -> None:
        """Replace `key`'s item (under _lock), keeping the byte count."""
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        if item is not None:
            self._items[key] = item
            self._bytes += item.size

    def _undo(self, key: str, new: Item | None, old: Item | None) -> None:
        """The commit failed: put back what was there, if the write is still the latest."""
        with self._lock:
            if self._items.get(key) is new:
                self._put(key, old)

    def _tell(self, key: str, op: str, item: Item) -> None:
        """Tell the watchers of a committed change (on the committing thread)."""
        watchers = self._watchers.matching(key)
        if watchers:
            line = change_line(key, op, item.value if op == "set" else None, item.version)
            for push in watchers:
                push(line)

    def purge_expired(self) -> int:
        now = time.time()
        with self._lock:
            gone = [(k, it) for k, it in self._items.items() if not it.alive(now)]
            if not gone:
                return 0
            for k, it in gone:
                self._put(k, None)
                self._remember(k, it.version)
            rows = [(k, it.version) for k, it in gone]  # by version: a key set again meanwhile stays

            def tell_all() -> None:
                for k, it in gone:
                    self._tell(k, "expire", it)

            self.db.submit(Write(DELETE_VERSION, rows, many=True, after=tell_all))
            self.db.kick()
        self.expired += len(gone)
        return len(gone)

    def _remember(self, key: str, version: int) -> None:
        """Keep a gone key's last version (under _lock), forgetting the oldest past max_keys."""
        self._gone[key] = version
        while len(self._gone) > self.cfg.max_keys:
            del self._gone[next(iter(self._gone))]

    # -- watchers --------------------------------------------------------------

    def watch(self, prefix: str, push: Watcher) -> Callable[[], None]:
        """Call `push` with each committed change under `prefix`; returns what stops it."""
        with self._lock:
            handle = self._watchers.add(prefix, push)

        def unwatch() -> None:
            with self._lock:
                self._watchers.remove(prefix, handle)

        return unwatch

    def status(self) -> dict[str, Any]:
        return {
            "path": self.db.path,
            "keys": len(self._items),
            "bytes": self._bytes,
            "watchers": self._watchers.count,
            "sets": self.sets,
            "deletes": self.deletes,
            "expired": self.expired,
            "commits": self.db.counters.commits,
        }


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _encode(value: Any, max_bytes: int) -> tuple[str, int]:
    """The value as JSON text, and its size; over the limits, -32602 or -32002."""
    encoded = dumps(value)
    if len(encoded) > 2 * MAX_DEPTH and too_deep(encoded, MAX_DEPTH):  # shorter, it cannot be
        raise InvalidParams(f"invalid param 'value': nested more than {MAX_DEPTH} deep", "value")
    if encoded.isascii():
        size = len(encoded)
    else:
        try:
            size = len(encoded.encode("utf-8"))
        except UnicodeEncodeError:  # SQLite would refuse it, failing every write committed with it
            raise InvalidParams(
                "invalid param 'value': a lone surrogate (\\ud800-\\udfff) is not Unicode", "value"
            ) from None
    if size > max_bytes:
        raise LimitReached(f"value is {size} bytes; kv.max_value_bytes = {max_bytes}", "max_value_bytes", max_bytes)
    return encoded, size


def _checked_json(text: str) -> str:
    """A stored value, if it is JSON this ipcd would accept (nesting included)."""
    try:
        json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if too_deep(text, MAX_DEPTH):
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    return text
