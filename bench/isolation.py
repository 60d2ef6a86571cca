"""Isolation benchmark: ipcd's log intake alone, and with 64 control connections pinging flat out.

    .venv/bin/python bench/isolation.py [-n 300000] [--reps 3] [--seconds 3]

A blocked log socket blocks every service that logs, so intake must hold up
while the control socket is busy (DESIGN.md).  Each rep, each on a fresh
ipcd:

1. intake alone: bench/loadgen's blocking datagram sender (as glibc's
   syslog) sends n lines; rows committed per second, from the first
   datagram until the last row is committed;
2. pings alone: one `loadgen rpc --conns 64` (C, epoll), --seconds long;
3. both at once: the same pinger running flat out while the same n
   datagrams go in; its requests/s and p99 are measured only while the
   datagrams flow (loadgen starts measuring on SIGUSR1).

Committed rows are read from ipcd's store through a read-only SQLite
connection (`max(id)`), not over the control socket, which is busy; the
count is checked against `status` at the end.  The reps alternate
(alone, together, alone, together, ...); medians and spread are shown.
Nothing is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import Loadgen, build_loadgen, call, cell, loadgen, machine, ratio, start_ipcd, table, workdir

CONNS = 64
SIZE = 160
PROBE = b"<14>Nov 30 12:00:00 probe[1]: ready"
CONFIG = "[log]\nrate_limit_burst = 1000000000\n"


class Store:
    """ipcd's store, read-only: the newest committed id."""

    def __init__(self, db: str) -> None:
        self.db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)

    def newest(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def wait_for(store: Store, want: int, alive: Callable[[], bool], timeout: float = 600) -> int:
    """Poll every 5 ms until `want` rows are committed; the monotonic ns when they were."""
    deadline = time.monotonic() + timeout
    while store.newest() < want:
        if not alive():
            raise RuntimeError("ipcd died")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ipcd: {store.newest()} of {want} rows after {timeout:.0f} s")
        time.sleep(0.005)
    return time.monotonic_ns()


def intake(d: Path, n: int, pingers: bool, seconds: float) -> dict:
    """One fresh ipcd: intake rate, alone or beside 64 pinging connections."""
    srv, ctl, logsock = start_ipcd(d, CONFIG)
    pinger: Loadgen | None = None
    store: Store | None = None
    try:
        st = call(ctl, "status")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(str(logsock))
            s.send(PROBE)
        store = Store(st["store"]["path"])
        wait_for(store, 1, srv.alive, 30)
        base = store.newest()
        out: dict = {}
        if pingers:
            out["alone"] = loadgen("rpc", ctl, "--conns", CONNS, "--check", "--seconds", seconds, "--warmup", 0.5)
            pinger = Loadgen("rpc", ctl, "--conns", CONNS, "--check", "--seconds", 3600)
            deadline = time.monotonic() + 30
            while call(ctl, "status")["connections"]["active"] < CONNS + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the 64 pinging connections did not come up")
                time.sleep(0.01)
            pinger.signal(signal.SIGUSR1)  # measure from here
        r = loadgen("dgram", logsock, "--count", n, "--size", SIZE)
        end = wait_for(store, base + n, srv.alive)
        if pinger is not None:
            out["together"] = pinger.finish()
            pinger = None
        stored = call(ctl, "status")["logs"]["stored"]
        if stored != n + 1:
            raise RuntimeError(f"ipcd says {stored} stored, expected {n + 1}")
        out["rate"] = n / ((end - r["start_ns"]) / 1e9)
        return out
    finally:
        if pinger is not None:
            pinger.kill()
        if store is not None:
            store.close()
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300_000, help="datagrams per run [300000]")
    ap.add_argument("--reps", type=int, default=3, help="alternating reps; the median is shown [3]")
    ap.add_argument("--seconds", type=float, default=3, help="seconds of pings alone [3]")
    a = ap.parse_args()
    build_loadgen()
    alone: list[dict] = []
    together: list[dict] = []
    with workdir("ib-iso-") as tmp:
        for rep in range(a.reps):
            alone.append(intake(tmp / f"a{rep}", a.n, False, a.seconds))
            together.append(intake(tmp / f"t{rep}", a.n, True, a.seconds))
            print(f"  (rep {rep + 1}/{a.reps} done)", file=sys.stderr, flush=True)
    print()
    print(f"ipcd isolation: {a.n:,} datagrams of {SIZE} bytes (C blocking sender) beside {CONNS} connections")
    print(f"pinging flat out (loadgen rpc, closed loop); {a.reps} alternating reps, median (min-max)")
    print(machine())
    rows = []
    ia, it = [x["rate"] for x in alone], [x["rate"] for x in together]
    rows.append(["intake rows committed/s", cell(ia), cell(it), ratio(it, ia)])
    pa, pt = [x["alone"] for x in together], [x["together"] for x in together]
    for label, key in (
        ("ping req/s (64 conns)", "requests_per_s"),
        ("ping p50 us", "p50_us"),
        ("ping p99 us", "p99_us"),
    ):
        xa, xt = [r[key] for r in pa], [r[key] for r in pt]
        rows.append([label, cell(xa), cell(xt), ratio(xt, xa)])
    print(table(["", "alone", "both at once", "both/alone"], rows))
    bad = sum(r["errors"] + r["check_failed"] + r["closed"] for r in pa + pt)
    if bad:
        print(f"  ! {bad} ping errors, failed checks or closed connections")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
