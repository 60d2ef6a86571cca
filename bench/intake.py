"""Log intake benchmark: rows committed per second by ipcd, beside baselines from the same run.

    .venv/bin/python bench/intake.py [-n 1000000] [--reps 3] [--qlen both|this|512]

The sender is bench/loadgen (C): blocking send() on a connected datagram
socket, as glibc's syslog(3) does, so nothing is lost and a slow reader
slows the sender; lines shaped as glibc sends them, 160 bytes.  Targets,
alternating within each rep, each started fresh in a temp dir:

1. a bare Python recv loop that only counts (the ceiling for any Python
   reader; timed by its sender, which ends within a queue's length of it);
2. bench/baselines/minimal_intake.py: socketserver.UnixDatagramServer, one
   regex, 8 columns, executemany + commit every 1000 rows or 50 ms, WAL
   (counted as `max(rowid)` through a read-only connection);
3. rsyslogd writing to a file (imuxsock on a socket of its own, omfile),
   counted as the sender's lines found in the file;
4. ipcd: parsing, credentials, rate limiting, stored; counted when
   `status` says `logs.stored` has reached n (committed and queryable).

Each figure runs from the sender's first datagram to the moment the last
row is seen committed. --prefill N starts the minimal intake and ipcd on
stores that hold N rows already (written beforehand, once, by each one's
own statements, and copied for every rep): the steady state of a full store
without sending N datagrams each rep, so that shorter reps can alternate
more often on a machine whose speed drifts. Then `logs.query` for the
newest 100 entries of the store (median and p95 of --queries calls over the control
socket), beside the same SELECT done in-process on minimal_intake's
database.

A blocking sender waits whenever the socket's queue holds
net.unix.max_dgram_qlen datagrams: the kernel's default is 10, systemd sets
512 at boot.  Run as root, the whole set runs again in a private network
namespace (`unshare --net`) with 512.  rsyslogd comes from Debian's rsyslog
package (see bench/README.md); without it, that row is skipped.
Nothing here is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from baselines import minimal_intake
from benchlib import (
    BASELINES,
    PYTHON,
    Server,
    build_loadgen,
    call,
    cell,
    dgram_qlen,
    loadgen,
    machine,
    ratio,
    start_ipcd,
    table,
    workdir,
)

from ipcd.config import StoreConfig
from ipcd.logs.writer import Received, Writer
from ipcd.wire.logparse import parse_datagram

SIZE = 160
PROBE = b"<14>Nov 30 12:00:00 probe[1]: ready"
TARGETS = ("bare", "minimal", "rsyslog", "ipcd")
LABELS = {
    "bare": "Python recv loop, count only (ceiling)",
    "minimal": "minimal_intake.py: regex + SQLite batches",
    "rsyslog": "rsyslogd: imuxsock -> omfile",
    "ipcd": "ipcd: parsed, credentials, stored",
}
RSYSLOG_CONF = """\
global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/rs.sock" RateLimit.Interval="0")
action(type="omfile" file="{d}/out.log" template="RSYSLOG_TraditionalFileFormat")
"""


def send_probe(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(str(path))
        s.send(PROBE)


def wait_until(done: Callable[[], bool], what: str, timeout: float, alive: Callable[[], bool]) -> int:
    """Poll `done` every 5 ms; the monotonic ns when it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return time.monotonic_ns()
        if not alive():
            raise RuntimeError(f"{what}: the server died")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(0.005)


def sender(path: Path, n: int) -> dict:
    return loadgen("dgram", path, "--count", n, "--size", SIZE)


def run_bare(d: Path, n: int) -> tuple[float, dict]:
    sock = d / "b.sock"
    srv = Server("recv loop", [PYTHON, BASELINES / "minimal_intake.py", "--bare", sock], log=d / "bare.log")
    try:
        srv.wait_ready(lambda: sock.exists() and (send_probe(sock) or True))
        r = sender(sock, n)
        return n / ((r["end_ns"] - r["start_ns"]) / 1e9), {}
    finally:
        srv.stop()


def prefill_minimal(path: Path, rows: int) -> None:
    """minimal_intake.py's database holding `rows` rows shaped as the sender's."""
    row = (time.time(), "Nov 30 12:00:00", 6, 1, "bench", 1, "x" * (SIZE - 30), SIZE)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(minimal_intake.SCHEMA)
        for at in range(0, rows, 10_000):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [row] * min(10_000, rows - at))
            conn.execute("COMMIT")
    finally:
        conn.close()


def prefill_ipcd(path: Path, rows: int) -> None:
    """An ipcd store holding `rows` entries shaped as the sender's, written by ipcd's own writer."""
    entry = parse_datagram(b"<14>Nov 30 12:00:00 bench[1]: ".ljust(SIZE, b"x"))
    w = Writer(str(path), StoreConfig(max_entries=2 * rows, commit_batch=10_000))
    try:
        for at in range(0, rows, 10_000):
            now = time.time()
            w.add([Received(now, entry, False, 1, os.getuid(), os.getgid(), "loadgen", None)] * min(10_000, rows - at))
        w.commit()
    finally:
        w.close()


def run_minimal(d: Path, n: int, queries: int, prefilled: Path | None = None) -> tuple[float, dict]:
    sock, db = d / "m.sock", d / "m.db"
    base = 0
    if prefilled is not None:
        shutil.copyfile(prefilled, db)
        with sqlite3.connect(db) as c:
            base = int(c.execute("SELECT max(rowid) FROM logs").fetchone()[0])
    srv = Server("minimal_intake.py", [PYTHON, BASELINES / "minimal_intake.py", sock, db], log=d / "minimal.log")
    ro: sqlite3.Connection | None = None
    try:

        def committed() -> int:
            nonlocal ro
            if ro is None:
                if not (db.exists() and Path(f"{db}-wal").exists()):
                    return 0
                ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
            try:
                return int(ro.execute("SELECT coalesce(max(rowid), 0) FROM logs").fetchone()[0])
            except sqlite3.OperationalError:  # the table is not there yet
                return 0

        srv.wait_ready(lambda: sock.exists() and (send_probe(sock) or True))
        wait_until(lambda: committed() >= base + 1, "minimal_intake.py probe", 30, srv.alive)
        r = sender(sock, n)
        end = wait_until(lambda: committed() >= base + n + 1, "minimal_intake.py", 600, srv.alive)
        assert ro is not None
        lat = []
        for _ in range(queries):
            t0 = time.perf_counter()
            got = ro.execute("SELECT * FROM logs ORDER BY rowid DESC LIMIT 100").fetchall()
            lat.append((time.perf_counter() - t0) * 1000)
            assert len(got) == 100
        return n / ((end - r["start_ns"]) / 1e9), {"query_ms": lat}
    finally:
        if ro is not None:
            ro.close()
        srv.stop()


class LineCounter:
    """Counts complete lines holding each tag in a growing file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tail = b""
        self.counts = {b" probe[": 0, b" bench[": 0}

    def scan(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        whole, _, self.tail = (self.tail + chunk).rpartition(b"\n")
        for tag in self.counts:
            self.counts[tag] += whole.count(tag)


def run_rsyslog(d: Path, n: int) -> tuple[float, dict]:
    exe = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    conf, out, sock = d / "rsyslog.conf", d / "out.log", d / "rs.sock"
    conf.write_text(RSYSLOG_CONF.format(d=d))
    srv = Server("rsyslogd", [exe, "-n", "-f", conf, "-i", d / "rsyslogd.pid"], log=d / "rsyslogd.stderr")
    lines = LineCounter(out)

    def count(tag: bytes, want: int) -> bool:
        lines.scan()
        return lines.counts[tag] >= want

    try:
        srv.wait_ready(lambda: sock.exists() and (send_probe(sock) or True))
        wait_until(lambda: count(b" probe[", 1), "rsyslogd probe", 30, srv.alive)
        r = sender(sock, n)
        end = wait_until(lambda: count(b" bench[", n), "rsyslogd", 600, srv.alive)
        return n / ((end - r["start_ns"]) / 1e9), {}
    finally:
        srv.stop()


def run_ipcd(d: Path, n: int, queries: int, prefilled: Path | None = None, rows: int = 0) -> tuple[float, dict]:
    conf = f"[log]\nrate_limit_burst = 1000000000\n[store]\nmax_entries = {max(n + rows, 1) * 2}\n"
    if prefilled is not None:
        (d / "s").mkdir(mode=0o700)
        shutil.copyfile(prefilled, d / "s" / "ipcd.db")
    srv, ctl, logsock = start_ipcd(d, conf)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as watch:
            watch.connect(str(ctl))

            def stored() -> int:
                return int(call(watch, "status")["logs"]["stored"])

            send_probe(logsock)
            wait_until(lambda: stored() >= 1, "ipcd probe", 30, srv.alive)
            r = sender(logsock, n)
            end = wait_until(lambda: stored() >= n + 1, "ipcd", 600, srv.alive)
            st = call(watch, "status")
            newest = call(watch, "logs.query", {"limit": 1})["entries"][0]
            if newest["ident"] != "bench" or not newest["sender_comm"]:
                raise RuntimeError(f"unexpected newest entry: {newest}")
            lat = []
            for _ in range(queries):
                t0 = time.perf_counter()
                got = call(watch, "logs.query", {"limit": 100})["entries"]
                lat.append((time.perf_counter() - t0) * 1000)
                assert len(got) == 100
        return n / ((end - r["start_ns"]) / 1e9), {"query_ms": lat, "logs": st["logs"]}
    finally:
        srv.stop()


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(0, int(len(xs) * 0.95) - 1)]


def one_setting(label: str, n: int, reps: int, queries: int, prefill: int = 0) -> None:
    have_rsyslog = bool(shutil.which("rsyslogd") or os.path.exists("/usr/sbin/rsyslogd"))
    targets = [t for t in TARGETS if t != "rsyslog" or have_rsyslog]
    rates: dict[str, list[float]] = {t: [] for t in targets}
    extra: dict[str, list[dict]] = {t: [] for t in targets}
    with workdir("ib-in-") as tmp:
        pre_min = pre_ipcd = None
        if prefill:
            pre_min, pre_ipcd = tmp / "prefilled-minimal.db", tmp / "prefilled-ipcd.db"
            print(f"  ({label}: writing {prefill:,} rows into each store first)", file=sys.stderr, flush=True)
            prefill_minimal(pre_min, prefill)
            prefill_ipcd(pre_ipcd, prefill)
        for rep in range(reps):
            for t in targets:
                d = tmp / f"{t}{rep}"
                d.mkdir()
                if t == "bare":
                    rate, x = run_bare(d, n)
                elif t == "minimal":
                    rate, x = run_minimal(d, n, queries, pre_min)
                elif t == "rsyslog":
                    rate, x = run_rsyslog(d, n)
                else:
                    rate, x = run_ipcd(d, n, queries, pre_ipcd, prefill)
                rates[t].append(rate)
                extra[t].append(x)
                shutil.rmtree(d, ignore_errors=True)
            print(f"  ({label}: rep {rep + 1}/{reps} done)", file=sys.stderr, flush=True)
    print()
    filled = f", into stores of {prefill:,} rows" if prefill else ""
    print(
        f"net.unix.max_dgram_qlen = {dgram_qlen()} ({label}): {n:,} datagrams of {SIZE} bytes{filled}, C blocking sender"
    )
    ipcd = rates["ipcd"]
    rows = [[LABELS[t], cell(rates[t]), ratio(ipcd, rates[t])] for t in targets]
    print(table(["rows committed/s, median (min-max)", f"of {reps} reps", "ipcd/this"], rows))
    per_rep = [i / m for i, m in zip(ipcd, rates["minimal"], strict=True)]
    print(f"  ipcd/minimal_intake.py rep by rep: {' '.join(f'{r:.2f}' for r in per_rep)}")
    q_ipcd = [q for x in extra["ipcd"] for q in x["query_ms"]]
    q_min = [q for x in extra["minimal"] for q in x["query_ms"]]
    print(
        f"  logs.query newest 100 of {n + prefill:,}: median {statistics.median(q_ipcd):.2f} ms, p95 {p95(q_ipcd):.2f} ms "
        f"over the control socket ({len(q_ipcd)} calls); the same SELECT in-process on minimal_intake's "
        f"database: median {statistics.median(q_min):.2f} ms, p95 {p95(q_min):.2f} ms"
    )
    for x in extra["ipcd"]:
        logs = x["logs"]
        if logs["dropped"] or logs["malformed"] or logs["rate_limited"]:
            print(
                f"  ! ipcd counted dropped {logs['dropped']}, malformed {logs['malformed']}, "
                f"rate_limited {logs['rate_limited']}"
            )
    if not have_rsyslog:
        print("  (rsyslogd not installed: its row is skipped; see bench/README.md)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="datagrams per run [1000000]")
    ap.add_argument("--reps", type=int, default=3, help="alternating reps; the median is shown [3]")
    ap.add_argument("--queries", type=int, default=50, help="logs.query calls per rep [50]")
    ap.add_argument("--prefill", type=int, default=0, help="rows in the stores before each rep starts [0]")
    ap.add_argument(
        "--qlen",
        choices=("both", "this", "512"),
        default="both",
        help="this machine's max_dgram_qlen, systemd's 512 (root: a private network namespace), or both [both]",
    )
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    build_loadgen()
    if a.in_netns:  # inside `unshare --net`, with systemd's queue length
        one_setting("systemd's default, in a private network namespace", a.n, a.reps, a.queries, a.prefill)
        return
    filled = f", into stores of {a.prefill:,} rows" if a.prefill else ""
    print(f"ipcd log intake: {a.n:,} datagrams per run{filled}, {a.reps} alternating reps")
    print(machine())
    if a.qlen in ("both", "this"):
        one_setting("this machine", a.n, a.reps, a.queries, a.prefill)
    if a.qlen in ("both", "512"):
        if dgram_qlen() >= 512 and a.qlen == "512":
            one_setting("this machine", a.n, a.reps, a.queries, a.prefill)
        elif dgram_qlen() < 512 and os.geteuid() == 0 and shutil.which("unshare"):
            sys.stdout.flush()
            args = ["-n", str(a.n), "--reps", str(a.reps), "--queries", str(a.queries), "--prefill", str(a.prefill)]
            args.append("--in-netns")
            script = 'echo 512 > /proc/sys/net/unix/max_dgram_qlen && exec "$@"'
            subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", PYTHON, __file__, *args], check=True)
        elif dgram_qlen() < 512:
            print("\n(max_dgram_qlen 512 needs root for a private network namespace: skipped)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
