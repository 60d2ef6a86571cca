"""The least a socketserver log intake must do: the baseline for ipcd's log socket.

    python bench/baselines/minimal_intake.py SOCKET DB
    python bench/baselines/minimal_intake.py --bare SOCKET

socketserver.UnixDatagramServer whose handler parses each datagram with ONE
regex (`<PRI>TIMESTAMP TAG[PID]: MSG`, a datagram it does not match is kept
whole as the message) and appends 8 columns (time, timestamp, priority,
facility, ident, pid, message, bytes) to a list; the list goes into SQLite
with executemany + commit every 1000 rows or 50 ms, whichever comes first
(WAL, synchronous=NORMAL, no index but the rowid).  No credentials, no rate
limit, no JSON or RFC 5424, no retention: whatever ipcd does beyond this is
what it costs over the baseline.

Committed rows are `SELECT max(rowid) FROM logs` (rows are never deleted),
which the benchmark reads through a read-only connection of its own, so
counting costs this process nothing.

--bare: a plain recv loop that parses and keeps nothing, the ceiling for any
Python reader of a datagram socket (the benchmark times it by its sender).

SIGTERM stops it (what is pending is committed, the socket file removed).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import socketserver
import sqlite3
import sys
import threading
import time
from typing import Any

LINE = re.compile(rb"<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ([^\s\[:]+)\[(\d+)\]: (.*)", re.S)
BATCH_ROWS = 1000
BATCH_S = 0.05
SCHEMA = """CREATE TABLE IF NOT EXISTS logs (
    time REAL, timestamp TEXT, priority INTEGER, facility INTEGER,
    ident TEXT, pid INTEGER, message TEXT, bytes INTEGER)"""


class Handler(socketserver.BaseRequestHandler):
    server: Intake

    def handle(self) -> None:
        data: bytes = self.request[0]
        m = LINE.match(data)
        if m:
            pri = int(m[1])
            row = (
                time.time(),
                m[2].decode(),
                pri & 7,
                pri >> 3,
                m[3].decode(),
                int(m[4]),
                m[5].decode(errors="replace"),
                len(data),
            )
        else:
            row = (time.time(), None, 5, 1, None, None, data.decode(errors="replace"), len(data))
        rows = self.server.rows
        if not rows:
            self.server.first = time.monotonic()
        rows.append(row)


class Intake(socketserver.UnixDatagramServer):
    def __init__(self, path: str, db: str) -> None:
        super().__init__(path, Handler)
        self.rows: list[tuple[Any, ...]] = []
        self.first = 0.0
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)

    def service_actions(self) -> None:  # after every datagram, and every poll interval
        if len(self.rows) >= BATCH_ROWS or (self.rows and time.monotonic() - self.first >= BATCH_S):
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self.rows)
            self.db.execute("COMMIT")
            self.rows = []


def bare(path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    recv = s.recv
    n = 0
    try:
        while True:
            recv(65536)
            n += 1
    finally:
        s.close()
        os.unlink(path)


def main() -> None:
    if sys.argv[1] == "--bare":
        bare(sys.argv[2])
        return
    path, db = sys.argv[1], sys.argv[2]
    server = Intake(path, db)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=BATCH_S / 2)
    except KeyboardInterrupt:
        pass
    finally:
        server.flush()
        server.server_close()
        os.unlink(path)


if __name__ == "__main__":
    main()
