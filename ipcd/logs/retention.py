"""Retention: the oldest log entries go when the store passes a limit.

`[store] max_entries`, `max_bytes` and `max_age_s` (DESIGN.md "Log
socket").  Runs on the writer's connection, between commits, every
`retention_interval_s`; deletes in chunks so that intake never waits long
behind one big delete.  Ids are never given twice: the last id given is
remembered in `meta` before anything is deleted, so a store emptied by
retention goes on counting from there.
"""

from __future__ import annotations

import sqlite3
import time

from ipcd.config import StoreConfig

CHUNK = 50_000  # rows per DELETE


class Retention:
    """One pass over the limits; `entries` is the writer's count, kept in step."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.entries = 0
        self.deleted = 0

    def run(self, cfg: StoreConfig, next_id: int, entries: int) -> int:
        """Enforce every limit; returns the number of entries now in the store."""
        self.entries = entries
        self._over_count(cfg, next_id)
        self._over_age(cfg, next_id)
        self._over_bytes(cfg, next_id)
        return self.entries

    def _delete_before(self, first_kept: int, next_id: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?)", (next_id - 1,))
        while True:
            low = self.conn.execute("SELECT min(id) FROM entries").fetchone()[0]
            if low is None or low >= first_kept:
                return
            upto = min(first_kept, low + CHUNK)
            cur = self.conn.execute("DELETE FROM entries WHERE id < ?", (upto,))
            self.entries -= cur.rowcount
            self.deleted += cur.rowcount

    def _over_count(self, cfg: StoreConfig, next_id: int) -> None:
        if self.entries > cfg.max_entries:
            self._delete_before(next_id - cfg.max_entries, next_id)

    def _over_age(self, cfg: StoreConfig, next_id: int) -> None:
        if cfg.max_age_s <= 0:
            return
        cutoff = time.time() - cfg.max_age_s
        first = self.conn.execute("SELECT min(id) FROM entries WHERE time >= ?", (cutoff,)).fetchone()[0]
        self._delete_before(first if first is not None else next_id, next_id)

    def used_bytes(self) -> int:
        pages, free, size = (
            self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def _over_bytes(self, cfg: StoreConfig, next_id: int) -> None:
        # The oldest share that brings the store to 90% of the limit; the share is
        # an estimate (pages are shared), so look again, a few times at most.
        for _ in range(5):
            used = self.used_bytes()
            if used <= cfg.max_bytes or self.entries == 0:
                return
            share = (used - 0.9 * cfg.max_bytes) / used
            low = self.conn.execute("SELECT min(id) FROM entries").fetchone()[0]
            self._delete_before(low + max(1, int(self.entries * share)), next_id)
