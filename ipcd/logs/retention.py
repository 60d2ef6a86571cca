"""Retention: old log entries go when the store passes a limit, fairly between users.

`[store] max_entries`, `max_bytes` and `max_age_s` (DESIGN.md "Log
socket").  The age limit removes what is older than it, whoever sent it.
The count and byte limits are fair between uids: over one of them, the
oldest entries of the uids that hold more than their share go, the share
being the level at which what all uids keep fits the limit (water-filling:
a uid under the level keeps everything), so a local user who floods the log
pushes out only their own entries, never another user's.

Who holds how much is counted here, in memory: rows and (about) bytes per
sender uid, read once from the store at start (through the `sender_uid`
index) and kept in step by the writer (`added`) and by the deletes.  Runs
on the writer's connection, between commits, every `retention_interval_s`,
deleting in chunks so that intake never waits long behind one big delete.
Ids are never given twice: the last id given is remembered in `meta` before
anything is deleted, so a store emptied by retention goes on from there.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping

from ipcd.config import StoreConfig

CHUNK = 50_000  # rows per DELETE
ROW_BYTES = 96  # what a row costs the store beyond its message, about

Uid = int | None  # None: entries from a store that did not record the sender's uid


def fair_levels(held: Mapping[Uid, float], target: float) -> dict[Uid, float]:
    """How much each uid must give up so that all together hold at most `target`.

    The uids above the level L give up what they hold beyond it, where L is
    the highest level with sum(min(held, L)) <= target; the others give up
    nothing.
    """
    total = sum(held.values())
    if total <= target or not held:
        return {}
    sizes = sorted(held.values())
    below, n = 0.0, len(sizes)
    level = 0.0
    for i, size in enumerate(sizes):
        # If every uid from i on were cut to `size`: below + size * (n - i).
        if below + size * (n - i) > target:
            level = max(0.0, (target - below) / (n - i))
            break
        below += size
    return {uid: h - level for uid, h in held.items() if h > level}


class Retention:
    """The limits, enforced; `entries` is the writer's count, kept in step."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.entries = 0
        self.deleted = 0
        self.rows: dict[Uid, int] = {}
        self.bytes: dict[Uid, int] = {}
        for uid, n, size in conn.execute(
            "SELECT sender_uid, count(*), sum(length(message)) FROM entries GROUP BY sender_uid"
        ):
            self.rows[uid] = n
            self.bytes[uid] = (size or 0) + ROW_BYTES * n

    def added(self, rows: Mapping[Uid, int], sizes: Mapping[Uid, int]) -> None:
        """What a commit added, by uid (rows, and message bytes)."""
        for uid, n in rows.items():
            self.rows[uid] = self.rows.get(uid, 0) + n
            self.bytes[uid] = self.bytes.get(uid, 0) + sizes.get(uid, 0) + ROW_BYTES * n

    def run(self, cfg: StoreConfig, next_id: int, entries: int) -> int:
        """Enforce every limit; returns the number of entries now in the store."""
        self.entries = entries
        self._over_age(cfg, next_id)
        self._over_count(cfg, next_id)
        self._over_bytes(cfg, next_id)
        return self.entries

    def _remember_last_id(self, next_id: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?)", (next_id - 1,))

    def _forget(self, uid: Uid, n: int, size: int) -> None:
        self.entries -= n
        self.deleted += n
        left = self.rows.get(uid, 0) - n
        if left > 0:
            self.rows[uid] = left
            self.bytes[uid] = max(0, self.bytes.get(uid, 0) - size - ROW_BYTES * n)
        else:
            self.rows.pop(uid, None)
            self.bytes.pop(uid, None)

    def _delete_oldest_of(self, uid: Uid, n: int) -> None:
        """The `n` oldest entries of `uid`, in chunks (through the sender_uid index)."""
        while n > 0:
            k = min(n, CHUNK)
            ids = "SELECT id FROM entries WHERE sender_uid IS ? ORDER BY id LIMIT ?"
            size_sql = f"SELECT coalesce(sum(length(message)), 0) FROM entries WHERE id IN ({ids})"
            size = self.conn.execute(size_sql, (uid, k)).fetchone()[0]
            cur = self.conn.execute(f"DELETE FROM entries WHERE id IN ({ids})", (uid, k))
            if cur.rowcount <= 0:
                self.rows.pop(uid, None)
                self.bytes.pop(uid, None)
                return
            self._forget(uid, cur.rowcount, size)
            n -= cur.rowcount

    def _over_count(self, cfg: StoreConfig, next_id: int) -> None:
        if self.entries <= cfg.max_entries:
            return
        self._remember_last_id(next_id)
        for uid, excess in fair_levels(self.rows, cfg.max_entries).items():
            self._delete_oldest_of(uid, int(excess + 0.999999))

    def _over_age(self, cfg: StoreConfig, next_id: int) -> None:
        if cfg.max_age_s <= 0:
            return
        cutoff = time.time() - cfg.max_age_s
        first = self.conn.execute("SELECT min(id) FROM entries WHERE +time >= ?", (cutoff,)).fetchone()[0]
        first_kept = first if first is not None else next_id
        low = self.conn.execute("SELECT min(id) FROM entries").fetchone()[0]
        if low is None or low >= first_kept:
            return
        self._remember_last_id(next_id)
        # Whoever sent them: by uid, to keep the counts in step.
        for uid, n, size in self.conn.execute(
            "SELECT sender_uid, count(*), coalesce(sum(length(message)), 0) FROM entries WHERE id < ? GROUP BY 1",
            (first_kept,),
        ).fetchall():
            self._forget(uid, n, size)
        while True:
            sql = "DELETE FROM entries WHERE id IN (SELECT id FROM entries WHERE id < ? LIMIT ?)"
            cur = self.conn.execute(sql, (first_kept, CHUNK))
            if cur.rowcount < CHUNK:
                return

    def used_bytes(self) -> int:
        pages, free, size = (
            self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def _over_bytes(self, cfg: StoreConfig, next_id: int) -> None:
        # Down to 90% of the limit.  What the pages hold is measured; who holds how much of
        # it is estimated from the messages' sizes, so look again, a few times at most.
        for _ in range(5):
            used = self.used_bytes()
            if used <= cfg.max_bytes or self.entries == 0:
                return
            self._remember_last_id(next_id)
            estimated = sum(self.bytes.values()) or 1
            target = estimated * (0.9 * cfg.max_bytes / used)
            for uid, excess in fair_levels(self.bytes, target).items():
                per_row = self.bytes[uid] / max(1, self.rows.get(uid, 1))
                self._delete_oldest_of(uid, max(1, int(excess / per_row + 0.999999)))
