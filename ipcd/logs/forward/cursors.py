"""Each forwarding target's cursor, persisted in `forward.db` in the state dir.

A cursor is the last entry id a target has delivered; it is keyed by the
target's name, so a reload that adds, removes or changes targets keeps the
cursors of the others, and a restart goes on from them.  A file of its own:
the log process is the only writer of ipcd.db.  Created 0600 like the store.
"""

from __future__ import annotations

import os
import sqlite3
import time

FORWARD_DB_NAME = "forward.db"


class Cursors:
    def __init__(self, path: str) -> None:
        self.path = path
        old = os.umask(0o077)
        try:
            self.conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
        finally:
            os.umask(old)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(path + suffix, 0o600)
            except FileNotFoundError:
                pass
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL, updated REAL NOT NULL)"
            " WITHOUT ROWID"
        )

    def load(self) -> dict[str, int]:
        return {name: int(last) for name, last in self.conn.execute("SELECT name, last_id FROM cursors")}

    def save(self, cursors: dict[str, int]) -> None:
        """Store these cursors in one transaction."""
        now = time.time()
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany(
                "INSERT OR REPLACE INTO cursors (name, last_id, updated) VALUES (?, ?, ?)",
                [(name, last, now) for name, last in cursors.items()],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()
