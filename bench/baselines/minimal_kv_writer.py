"""minimal_rpc.py's loop with kv.set persisted by group commit: where should the commit run?

    python bench/baselines/minimal_kv_writer.py SOCKET DB --writer none|thread|process

An experiment for kv.set's design, not one of the benchmarks' baselines.
The same loop as minimal_rpc.py (a thread per connection; recv, split lines,
json.loads, one sendall per read) answering `ping` and `kv.set`, where a
kv.set is:

- none: answered at once, stored nowhere (the loop's own cost);
- thread: queued to a writer thread that takes every queued set into one
  transaction (an upsert into a WITHOUT ROWID table, WAL,
  synchronous=NORMAL), commits, then sends each reply: group commit in the
  server's process, as ipcd's kv.db writer does;
- process: sent (with the client's socket, passed once per connection with
  SCM_RIGHTS) to a forked writer process that commits the same way and
  writes each reply to the client's socket itself: the commit and the
  replies leave the server's GIL.

Drive it with loadgen, e.g.
`bench/loadgen rpc --socket S --conns 8 --seconds 2 --request LINE` with a
ping line and a kv.set line in turn; README "Shared state" has the figures.
Each connection must only send kv.set or only ping: replies from the writer
and from the loop are not ordered against each other.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import queue
import signal
import socket
import socketserver
import sqlite3
import threading
import time
from typing import Any

UPSERT = "INSERT INTO kv VALUES (?, ?, 1) ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = version + 1"


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT, version INTEGER) WITHOUT ROWID")
    return db


def commit(db: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany(UPSERT, rows)
    db.execute("COMMIT")


def reply(req_id: Any, key: str) -> bytes:
    return (json.dumps({"jsonrpc": "2.0", "id": req_id, "result": {"key": key, "version": 1}}) + "\n").encode()


def writer_process(chan: socket.socket, path: str) -> None:
    """Each turn: every queued set (the first waited for), one commit, then the replies."""
    db = open_db(path)
    clients: dict[int, int] = {}  # connection number -> its socket, passed once
    while True:
        batch: list[tuple[int, Any, str, str]] = []
        chan.setblocking(True)
        while True:
            try:
                msg, anc, _flags, _addr = chan.recvmsg(65536, socket.CMSG_SPACE(4))
            except BlockingIOError:
                break
            if not msg:
                return
            chan.setblocking(False)
            cid, req_id, key, value = json.loads(msg)
            for _level, kind, data in anc:
                if kind == socket.SCM_RIGHTS:
                    clients[cid] = array.array("i", data[:4])[0]
            batch.append((cid, req_id, key, value))
        commit(db, [(key, value) for _, _, key, value in batch])
        for cid, req_id, key, _ in batch:
            try:
                os.write(clients[cid], reply(req_id, key))
            except OSError:
                pass  # that client is gone


class Writer:
    """Where a kv.set goes: `submit` it, the writer answers after its commit."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.lock = threading.Lock()
        self.next_cid = 0
        self.queue: queue.SimpleQueue[tuple[socket.socket, Any, str, str]] = queue.SimpleQueue()
        if kind == "thread":
            threading.Thread(target=self._thread, args=(path,), daemon=True).start()
        elif kind == "process":
            self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            if os.fork() == 0:
                self.chan.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                writer_process(theirs, path)
                os._exit(0)
            theirs.close()

    def _thread(self, path: str) -> None:
        db = open_db(path)
        while True:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            commit(db, [(key, value) for _, _, key, value in batch])
            for sock, req_id, key, _ in batch:
                try:
                    sock.sendall(reply(req_id, key))
                except OSError:
                    pass

    def submit(self, handler: Handler, req_id: Any, key: str, value: str) -> None:
        if self.kind == "thread":
            self.queue.put((handler.request, req_id, key, value))
            return
        with self.lock:  # one sender on the channel; a new connection's socket goes with its first set
            fds: list[tuple[int, int, bytes]] = []
            if handler.cid is None:
                self.next_cid += 1
                handler.cid = self.next_cid
                fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [handler.request.fileno()]).tobytes())]
            self.chan.sendmsg([json.dumps([handler.cid, req_id, key, value]).encode()], fds)


WRITER: Writer


class Handler(socketserver.BaseRequestHandler):
    cid: int | None = None

    def handle(self) -> None:
        sock: socket.socket = self.request
        tail = b""
        try:
            while data := sock.recv(65536):
                *lines, tail = (tail + data).split(b"\n")
                out = []
                for line in lines:
                    if not line.strip():
                        continue
                    req = json.loads(line)
                    if req.get("method") == "kv.set":
                        params = req["params"]
                        if WRITER.kind != "none":
                            WRITER.submit(self, req.get("id"), params["key"], json.dumps(params["value"]))
                            continue
                        result: dict[str, Any] = {"key": params["key"], "version": 1}
                    else:
                        result = {"pong": True, "time": time.time()}
                    out.append(json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "result": result}))
                if out:
                    sock.sendall(("\n".join(out) + "\n").encode())
        except OSError:
            pass


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def main() -> None:
    global WRITER
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("socket")
    ap.add_argument("db")
    ap.add_argument("--writer", choices=("none", "thread", "process"), default="thread")
    a = ap.parse_args()
    WRITER = Writer(a.writer, a.db)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    Server(a.socket, Handler).serve_forever()


if __name__ == "__main__":
    main()
