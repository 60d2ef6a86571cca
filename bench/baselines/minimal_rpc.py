"""The least a ThreadingMixIn JSON-RPC server must do: the ceiling for ipcd's control socket.

    python bench/baselines/minimal_rpc.py SOCKET

socketserver.ThreadingUnixStreamServer, a thread per connection, whose
handler loops: recv(65536), split the complete lines (keeping a partial
tail), json.loads each, look the method up in a dict, call it, json.dumps
the reply, and ONE sendall per read with every reply of that read.  No
limits, no roles, no params checking, no logging, no batches: whatever
ipcd does beyond this is what it costs over the ceiling.

Methods, only as far as the benchmarks need them:
- `ping` -> {"pong": true, "time": <epoch s>}, as ipcd's;
- `kv.set` / `kv.get` over a dict with a lock (in memory only: nothing is
  persisted, unlike ipcd and redis);
- `publish` / `subscribe`: each subscribing connection gets a queue and a
  thread that writes its notifications, as ipcd's streams never block a
  publisher.

SIGTERM stops it (the socket file is removed).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any

KV: dict[str, tuple[Any, int]] = {}
KV_LOCK = threading.Lock()
CHANNELS: dict[str, set[Handler]] = {}
CHANNELS_LOCK = threading.Lock()


def ping(conn: Handler, params: dict[str, Any]) -> Any:
    return {"pong": True, "time": time.time()}


def kv_set(conn: Handler, params: dict[str, Any]) -> Any:
    key = params["key"]
    with KV_LOCK:
        version = KV[key][1] + 1 if key in KV else 1
        KV[key] = (params["value"], version)
    return {"key": key, "version": version}


def kv_get(conn: Handler, params: dict[str, Any]) -> Any:
    key = params["key"]
    with KV_LOCK:
        value, version = KV[key]
    return {"key": key, "value": value, "version": version}


def subscribe(conn: Handler, params: dict[str, Any]) -> Any:
    conn.start_stream()
    with CHANNELS_LOCK:
        for ch in params["channels"]:
            CHANNELS.setdefault(ch, set()).add(conn)
            conn.channels.add(ch)
        return {"channels": sorted(conn.channels)}


def publish(conn: Handler, params: dict[str, Any]) -> Any:
    channel = params["channel"]
    with CHANNELS_LOCK:
        members = list(CHANNELS.get(channel, ()))
    note = {"channel": channel, "message": params["message"], "published_at": time.time()}
    line = (json.dumps({"jsonrpc": "2.0", "method": "message", "params": note}) + "\n").encode()
    for sub in members:
        sub.stream.put(line)
    return {"delivered": len(members)}


METHODS = {"ping": ping, "kv.set": kv_set, "kv.get": kv_get, "subscribe": subscribe, "publish": publish}


class Handler(socketserver.BaseRequestHandler):
    def setup(self) -> None:
        self.send_lock = threading.Lock()
        self.channels: set[str] = set()
        self.stream: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.writer: threading.Thread | None = None

    def start_stream(self) -> None:
        if self.writer is None:
            self.writer = threading.Thread(target=self.write_stream, daemon=True)
            self.writer.start()

    def write_stream(self) -> None:
        sock: socket.socket = self.request
        while (line := self.stream.get()) is not None:
            try:
                with self.send_lock:
                    sock.sendall(line)
            except OSError:
                return

    def handle(self) -> None:
        try:
            self.serve()
        except OSError:  # the client went away (a load generator stops mid-request)
            pass

    def serve(self) -> None:
        sock: socket.socket = self.request
        tail = b""
        while data := sock.recv(65536):
            *lines, tail = (tail + data).split(b"\n")
            replies = []
            for line in lines:
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                    fn = METHODS.get(req.get("method"))
                    if fn is None:
                        reply = {"jsonrpc": "2.0", "id": req.get("id"), "error": {"code": -32601, "message": "no"}}
                    else:
                        reply = {"jsonrpc": "2.0", "id": req.get("id"), "result": fn(self, req.get("params") or {})}
                except Exception as e:
                    reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": repr(e)}}
                replies.append(json.dumps(reply))
            if replies:
                with self.send_lock:
                    sock.sendall(("\n".join(replies) + "\n").encode())

    def finish(self) -> None:
        with CHANNELS_LOCK:
            for ch in self.channels:
                CHANNELS.get(ch, set()).discard(self)
        if self.writer is not None:
            self.stream.put(None)
            self.writer.join()


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # as ipcd's (and systemd's) backlog, not socketserver's 5


def main() -> None:
    path = sys.argv[1]
    server = Server(path, Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        os.unlink(path)


if __name__ == "__main__":
    main()
