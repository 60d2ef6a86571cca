"""Log intake benchmark: messages/s that ipcd stores, beside baselines from the same run.

    make bench                      # or: .venv/bin/python bench/intake.py [-n 1000000]

A sender process (blocking sendto, as glibc's syslog does) blasts
syslog-style datagrams at:

1. a bare Python recvfrom loop that only counts (the ceiling for any Python reader);
2. a bare Python loop that inserts what it reads into SQLite in batches;
3. ipcd itself: counted when every message is committed and queryable.

Then it measures `logs.query` for the newest 100 entries with the store
holding N entries.  Each figure is the median of --runs runs.  Run as root,
it measures again in a private network namespace with
net.unix.max_dgram_qlen = 512, as systemd sets it at boot (the kernel's
default, 10, makes a blocking sender wait on every tenth datagram).
Nothing here is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAYLOAD = "GET /api/v1/items?page=17 200 1234 bytes in 0.8 ms from 10.1.2.3"


def datagram(i: int, pid: int) -> bytes:
    return f"<14>Nov 27 10:00:00 bench[{pid}]: {i} {PAYLOAD}".encode()


def sender(path: str, n: int, start: mp.Event) -> None:  # type: ignore[valid-type]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(path)
    pid = os.getpid()
    msgs = [datagram(i, pid) for i in range(1000)]
    start.wait()
    send = s.send
    for i in range(n):
        send(msgs[i % 1000])  # blocks when the receiver's queue is full: no loss
    s.close()


def bare_recv(path: str, n: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    ready.set()
    recv = s.recv
    recv(65536)
    t0 = time.perf_counter()
    for _ in range(n - 1):
        recv(65536)
    out.put(time.perf_counter() - t0)
    s.close()


def bare_sqlite(path: str, db: str, n: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, time REAL, message TEXT)")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    ready.set()
    recv = s.recv
    batch = [(time.time(), recv(65536).decode())]
    t0 = time.perf_counter()
    for _ in range(n - 1):
        batch.append((time.time(), recv(65536).decode()))
        if len(batch) >= 5000:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO e (time, message) VALUES (?, ?)", batch)
            conn.execute("COMMIT")
            batch = []
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO e (time, message) VALUES (?, ?)", batch)
    conn.execute("COMMIT")
    out.put(time.perf_counter() - t0)
    conn.close()
    s.close()


def run_baseline(target: object, n: int, tmp: Path, *extra: object) -> float:
    path = str(tmp / "b.sock")
    ready, start, out = mp.Event(), mp.Event(), mp.Queue()
    recv = mp.Process(target=target, args=(path, *extra, n, ready, out))
    recv.start()
    ready.wait(30)
    send = mp.Process(target=sender, args=(path, n, start))
    send.start()
    start.set()
    elapsed = out.get(timeout=600)
    send.join()
    recv.join()
    os.unlink(path)
    return float(elapsed)


def call(sock: str | socket.socket, method: str, params: dict | None = None) -> dict:
    """One call, on a connection of its own (a path) or on `sock`."""
    if isinstance(sock, str):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock)
            return call(s, method, params)
    sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(1 << 20)
    reply = json.loads(data)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["result"]


def run_ipcd(n: int, tmp: Path, queries: int) -> tuple[float, dict, list[float]]:
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "ipcd.toml"
    conf.write_text(f"[log]\nrate_limit_burst = 1000000000\n[store]\nmax_entries = {max(n, 1) * 2}\n")
    run, state = tmp / "run", tmp / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ipcd",
            "--runtime-dir",
            str(run),
            "--state-dir",
            str(state),
            "--config",
            str(conf),
            "--log-level",
            "error",
        ],
    )
    ctl, logsock = str(run / "ipcd.sock"), str(run / "log.sock")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(ctl, "ping")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        start = mp.Event()
        send = mp.Process(target=sender, args=(logsock, n, start))
        send.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as watch:
            watch.connect(ctl)
            t0 = time.perf_counter()
            start.set()
            while call(watch, "status")["logs"]["stored"] < n:
                time.sleep(0.02)  # polling the counter, lightly: one request per 20 ms
            elapsed = time.perf_counter() - t0
        send.join()
        st = call(ctl, "status")
        newest = call(ctl, "logs.query", {"limit": 1})["entries"][0]
        assert newest["sender_comm"] and newest["ident"] == "bench", newest
        lat = []
        for _ in range(queries):
            q0 = time.perf_counter()
            got = call(ctl, "logs.query", {"limit": 100})["entries"]
            lat.append((time.perf_counter() - q0) * 1000)
            assert len(got) == 100
        return elapsed, st, lat
    finally:
        proc.terminate()
        proc.wait(60)


def qlen() -> int:
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        return int(f.read())


def one_setting(n: int, runs: int, queries: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ipcd-bench-", dir="/tmp"))
    try:
        recv, sql, ipcd, lat = [], [], [], []
        for r in range(runs):
            recv.append(n / run_baseline(bare_recv, n, tmp))
            sql.append(n / run_baseline(bare_sqlite, n, tmp, str(tmp / f"bare{r}.db")))
            elapsed, st, q = run_ipcd(n, tmp / f"ipcd{r}", queries)
            assert st["logs"]["dropped"] == 0 and st["logs"]["stored"] == n, st["logs"]
            ipcd.append(n / elapsed)
            lat += q
        lat.sort()
        return {
            "recv": statistics.median(recv),
            "sqlite": statistics.median(sql),
            "ipcd": statistics.median(ipcd),
            "ipcd_min": min(ipcd),
            "q_median": statistics.median(lat),
            "q_p95": lat[int(len(lat) * 0.95) - 1],
            "entries": n,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(label: str, r: dict[str, float], runs: int) -> None:
    print(f"  {label}, median of {runs} runs:")
    print(f"    baseline: bare Python recv loop (count only)       {r['recv']:>10,.0f} msg/s")
    print(f"    baseline: bare Python recv + SQLite batch insert   {r['sqlite']:>10,.0f} msg/s")
    print(
        f"    ipcd: received, parsed, credentials, stored       {r['ipcd']:>10,.0f} msg/s"
        f"  (slowest run {r['ipcd_min']:,.0f}; {r['ipcd'] / r['recv']:.0%} of the bare recv loop)"
    )
    print(
        f"    logs.query newest 100 of {r['entries']:,.0f}: median {r['q_median']:.2f} ms, p95 {r['q_p95']:.2f} ms"
        " (over the control socket)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="datagrams per run [1000000]")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is shown [3]")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--qlen-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.qlen_only:  # inside a private network namespace, with systemd's queue length
        report(
            f"net.unix.max_dgram_qlen = {qlen()} (systemd's default, in a private network namespace)",
            one_setting(args.n, args.runs, args.queries),
            args.runs,
        )
        return
    print(
        f"ipcd intake benchmark: {args.n:,} datagrams of ~{len(datagram(0, 99999))} bytes per run, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
    )
    # A blocking sender waits whenever the socket's queue holds max_dgram_qlen
    # datagrams: the kernel's default is 10, systemd sets 512 at boot.
    report(
        f"net.unix.max_dgram_qlen = {qlen()} (this machine)", one_setting(args.n, args.runs, args.queries), args.runs
    )
    if qlen() < 512 and os.geteuid() == 0 and shutil.which("unshare"):
        subprocess.run(
            [
                "unshare",
                "--net",
                "sh",
                "-c",
                'echo 512 > /proc/sys/net/unix/max_dgram_qlen && exec "$@"',
                "sh",
                sys.executable,
                __file__,
                "-n",
                str(args.n),
                "--runs",
                str(args.runs),
                "--queries",
                str(args.queries),
                "--qlen-only",
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
