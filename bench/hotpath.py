"""The control request path in-process: ipcd's handler beside the minimal server's loop, no sockets.

    .venv/bin/python bench/hotpath.py [-n 50000] [--reps 10] [--method ping | --request LINE] [--profile]

Both handlers read the same request line -n times from a fake socket (its
`recv` hands out the line, its `send` drops the reply), so what is measured
is the Python work of one request: framing, parsing, dispatch, the method,
the reply (`--request` takes any request line: kv.set and kv.get go to a
kv.db in a temp dir, each set its own commit, and the minimal server's
kv.set is a dict's; the key a kv.get reads is set first, in both). Reps
alternate (minimal, ipcd, minimal, ...) and the best CPU time per request
of each is shown, with their ratio. Run it pinned to one CPU (`taskset -c
1`) on a quiet machine. `--profile` prints cProfile's view of ipcd's path
afterwards, the way to see where a change should go.

Nothing is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import socket
import sys
import tempfile
import time
from collections.abc import Callable

from benchlib import BENCH, machine

from ipcd.config import parse
from ipcd.control import connection
from ipcd.control.access import Peer, make_policy
from ipcd.control.app import App
from ipcd.control.connection import ClientConnection
from ipcd.control.handler import ControlHandler
from ipcd.control.server import ControlServer
from ipcd.daemon.daemon import REGISTRY
from ipcd.state.kv import KvStore
from ipcd.state.kvdb import KvDb

sys.path.insert(0, str(BENCH / "baselines"))
import minimal_rpc  # noqa: E402


class FakeSocket:
    """`recv` returns `line` n times, then EOF; what is sent is dropped."""

    def __init__(self, line: bytes, n: int) -> None:
        self.line = line
        self.left = n

    def recv(self, size: int) -> bytes:
        if self.left:
            self.left -= 1
            return self.line
        return b""

    def sendall(self, data: bytes) -> None:
        pass

    send = sendall

    def fileno(self) -> int:
        return -1  # never used: `send_nowait` is replaced too (below)

    def setsockopt(self, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=50_000, help="requests per rep [50000]")
    ap.add_argument("--reps", type=int, default=10, help="alternating reps; the best of each is shown [10]")
    ap.add_argument("--method", default="ping", help="the method called, without params [ping]")
    ap.add_argument("--request", help="a whole request line instead (kv.set and kv.get go to a kv.db in a temp dir)")
    ap.add_argument("--profile", action="store_true", help="then cProfile ipcd's path")
    a = ap.parse_args()
    line = b'{"jsonrpc":"2.0","id":1,"method":"%s"}\n' % a.method.encode()
    if a.request:
        line = a.request.encode() + b"\n"
        a.method = a.request

    connection.send_nowait = lambda fd, data: len(data)  # a reply sent by a committing thread: dropped too
    cfg = parse(b"")
    app = App(cfg, make_policy(cfg.access, os.geteuid()), REGISTRY)
    tmp = tempfile.TemporaryDirectory(prefix="ipcd-hotpath-")
    kvdb = KvDb(os.path.join(tmp.name, "kv.db"))
    kvdb.start()
    app.provide(KvStore(kvdb, cfg.kv))
    if a.request and '"kv.get"' in a.request:  # the key it reads is there, in both
        key = json.loads(a.request)["params"]["key"]
        app.get(KvStore).set(key, {"n": 1, "s": "abc"}, None, None, os.geteuid(), os.getpid(), "hotpath")
        minimal_rpc.KV[key] = ({"n": 1, "s": "abc"}, 1)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"\0ipcd-hotpath-{os.getpid()}")  # abstract: nothing to clean up
    listener.listen()
    server = ControlServer(listener, app)

    def ipcd(n: int) -> None:
        conn = ClientConnection(FakeSocket(line, n), Peer(os.getpid(), 0, 0, role="admin"), server)  # type: ignore[arg-type]
        handler = ControlHandler.__new__(ControlHandler)  # as socketserver would, without its own call of handle
        handler.request, handler.server, handler.client_address = conn, server, None
        handler.handle()

    def minimal(n: int) -> None:
        handler = minimal_rpc.Handler.__new__(minimal_rpc.Handler)
        handler.request = FakeSocket(line, n)
        handler.setup()
        handler.serve()

    runs: list[tuple[str, Callable[[int], None]]] = [("minimal", minimal), ("ipcd", ipcd)]
    best = {name: float("inf") for name, _ in runs}
    for _ in range(a.reps):
        for name, fn in runs:
            t = time.process_time()
            fn(a.n)
            best[name] = min(best[name], (time.process_time() - t) / a.n * 1e6)
    print(machine())
    print(f"{a.method}, {a.n} requests per rep, best CPU time of {a.reps} alternating reps")
    print(f"  minimal_rpc.py loop  {best['minimal']:6.2f} us/request")
    print(f"  ipcd ControlHandler  {best['ipcd']:6.2f} us/request   minimal/ipcd {best['minimal'] / best['ipcd']:.2f}")
    if a.profile:
        prof = cProfile.Profile()
        prof.runcall(ipcd, a.n)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    server.server_close()
    kvdb.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
