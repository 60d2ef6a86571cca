"""Mixed load: 256 control clients doing requests while 50,000 datagrams arrive.

    .venv/bin/python bench/overload.py [--clients 256] [--datagrams 50000] [--requests 50]

Three runs against one fresh ipcd each, in the same process: requests alone
and datagrams alone (the baselines), then both at once.  Prints requests/s,
datagrams/s stored, errors and lost datagrams, and ipcd's RSS before, at the
peak and after.  Nothing is asserted: tests/test_robustness.py does that.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def call(sock: socket.socket, buf: bytearray, method: str) -> dict:
    sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode() + b"\n")
    while b"\n" not in buf:
        buf += sock.recv(65536)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def blast(path: str, n: int, start: mp.Event) -> None:  # type: ignore[valid-type]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(path)
    start.wait()
    for i in range(n):
        s.send(b"<14>Nov 27 10:00:00 overload[1]: datagram %d" % i)
    s.close()


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True)
        (tmp / "c.toml").write_text("[log]\nrate_limit_burst = 0\n[control]\nmax_connections = 1024\n")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ipcd",
                "--runtime-dir",
                str(tmp / "r"),
                "--state-dir",
                str(tmp / "s"),
                "--config",
                str(tmp / "c.toml"),
                "--log-level",
                "error",
            ]
        )
        self.ctl, self.log = str(tmp / "r" / "ipcd.sock"), str(tmp / "r" / "log.sock")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.status()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def status(self) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.ctl)
            return call(s, bytearray(), "status")["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def run(tmp: Path, clients: int, requests: int, datagrams: int) -> dict:
    d = Daemon(tmp)
    try:
        before = rss_kib(d.proc.pid)
        peak = [before]
        errors: list[str] = []
        barrier = threading.Barrier(clients + 1)

        def client() -> None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(d.ctl)
                    buf = bytearray()
                    barrier.wait(60)
                    for i in range(requests):
                        reply = call(s, buf, ("ping", "status", "kv.list")[i % 3])
                        if "error" in reply:
                            errors.append(str(reply["error"]))
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = mp.Event()
        sender = mp.Process(target=blast, args=(d.log, datagrams, start)) if datagrams else None
        for t in threads:
            t.start()
        if sender:
            sender.start()
        if clients:
            barrier.wait(60)
        t0 = time.perf_counter()
        start.set()
        while any(t.is_alive() for t in threads) or (sender and sender.is_alive()):
            peak[0] = max(peak[0], rss_kib(d.proc.pid))
            time.sleep(0.02)  # sampling RSS, not waiting for a condition
        t_req = time.perf_counter() - t0
        while datagrams and d.status()["logs"]["stored"] < datagrams:
            time.sleep(0.01)
        t_all = time.perf_counter() - t0
        st = d.status()
        return {
            "requests/s": clients * requests / t_req if clients else 0,
            "datagrams/s": datagrams / t_all if datagrams else 0,
            "errors": len(errors),
            "lost": datagrams - st["logs"]["stored"],
            "rss_kib": (before, peak[0], rss_kib(d.proc.pid)),
        }
    finally:
        d.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--datagrams", type=int, default=50_000)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ipcd-ovl-", dir="/tmp"))
    try:
        rows = [
            ("requests only (baseline)", run(base / "a", a.clients, a.requests, 0)),
            ("datagrams only (baseline)", run(base / "b", 0, 0, a.datagrams)),
            ("both at once", run(base / "c", a.clients, a.requests, a.datagrams)),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"ipcd mixed load: {a.clients} clients x {a.requests} requests, {a.datagrams} datagrams")
    for name, r in rows:
        b, p, af = r["rss_kib"]
        print(
            f"  {name:<26} {r['requests/s']:>9,.0f} req/s  {r['datagrams/s']:>9,.0f} dgram/s  "
            f"errors {r['errors']}  lost {r['lost']}  RSS {b // 1024}/{p // 1024}/{af // 1024} MiB (before/peak/after)"
        )


if __name__ == "__main__":
    main()
