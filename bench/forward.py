"""Forwarding to rsyslogd over TCP, beside rsyslog's own relay (omfwd) in the same run; the lag under load.

1. live relay: n datagrams from loadgen (a C blocking sender, as glibc's
   syslog) go in at one end, and the figure is n / (the first send until
   rsyslogd B has written the n-th line):
   - rsyslogd A (imuxsock on a socket of its own) -> omfwd, TCP, octet-counted -> rsyslogd B
   - ipcd (log socket -> store -> [[forward]] tcp://) -> rsyslogd B
2. drain: n entries already in ipcd's store while the target was down;
   rsyslogd B starts, and the figure is n / (B started until it has them
   all): forwarding alone, store to wire.
3. lag: ipcd at --rate datagrams/s (50,000) for --seconds, forwarding to
   rsyslogd B; the target's lag (entries committed, not yet delivered, which
   includes the at-least-once window of ack_window_s = 0.2 here) sampled
   every 0.1 s over the control socket.
rsyslogd B is the same in every row: imtcp on 127.0.0.1, omfile.  Each row
is the median of --reps alternating reps (min-max).  Only loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import Loadgen, Server, build_loadgen, call, cell, loadgen, machine, ratio, start_ipcd, table, workdir

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
SIZE = 160
B_CONF = """\
global(workDirectory="{d}")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="line" type="string" string="%app-name% %msg%\\n")
action(type="omfile" file="{d}/out.log" template="line")
"""
A_CONF = """\
global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/a.sock" RateLimit.Interval="0")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted"
       template="RSYSLOG_SyslogProtocol23Format")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with open("/proc/net/tcp") as f:
        return any(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in (ln.split() for ln in f.readlines()[1:]))


class Lines:
    """Complete lines in a growing file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.count = path, 0, 0

    def __call__(self) -> int:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
            whole = chunk.rfind(b"\n") + 1
            self.offset += whole
            self.count += chunk.count(b"\n", 0, whole)
        return self.count


def wait_until(done: Callable[[], bool], what: str, timeout: float, *servers: Server) -> int:
    """Poll `done` every 5 ms; the monotonic ns when it first held."""
    deadline = time.monotonic() + timeout
    while not done():
        for s in servers:
            if not s.alive():
                raise RuntimeError(f"{what}: {s.name} died{s.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(0.005)
    return time.monotonic_ns()


def start_b(d: Path, port: int) -> tuple[Server, Lines]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "b.conf").write_text(B_CONF.format(d=d, port=port))
    srv = Server("rsyslogd B", [RSYSLOGD, "-n", "-f", d / "b.conf", "-i", d / "b.pid"], log=d / "b.stderr")
    srv.wait_ready(lambda: listening(port))
    return srv, Lines(d / "out.log")


def probe(sock: Path, lines: Lines, want: int, *servers: Server) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"<14>probe: ready?", str(sock))
    wait_until(lambda: lines() >= want, "the probe", 60, *servers)


def relay_rsyslog(d: Path, n: int) -> float:
    port = free_port()
    b, lines = start_b(d / "b", port)
    (d / "a.conf").write_text(A_CONF.format(d=d, port=port))
    a = Server("rsyslogd A", [RSYSLOGD, "-n", "-f", d / "a.conf", "-i", d / "a.pid"], log=d / "a.stderr")
    try:
        a.wait_ready(lambda: (d / "a.sock").exists())
        probe(d / "a.sock", lines, 1, a, b)
        r = loadgen("dgram", d / "a.sock", "--count", n, "--size", SIZE)
        end = wait_until(lambda: lines() >= n + 1, "omfwd relay", 600, a, b)
        return n / ((end - r["start_ns"]) / 1e9)
    finally:
        a.stop()
        b.stop()


def ipcd_config(port: int, n: int) -> str:
    return (
        f"[log]\nrate_limit_burst = 0\n[store]\nmax_entries = {max(n, 1) * 3}\n"
        f'[[forward]]\nname = "b"\ntype = "syslog"\naddress = "tcp://127.0.0.1:{port}"\n'
        "ack_window_s = 0.2\nbackoff_max_s = 0.2\nbatch = 2000\n"
    )


def relay_ipcd(d: Path, n: int) -> float:
    port = free_port()
    b, lines = start_b(d / "b", port)
    srv, ctl, log = start_ipcd(d / "i", ipcd_config(port, n))
    try:
        probe(log, lines, 1, srv, b)
        r = loadgen("dgram", log, "--count", n, "--size", SIZE)
        end = wait_until(lambda: lines() >= n + 1, "ipcd forwarding", 600, srv, b)
        return n / ((end - r["start_ns"]) / 1e9)
    finally:
        srv.stop()
        b.stop()


def drain_ipcd(d: Path, n: int) -> float:
    port = free_port()
    srv, ctl, log = start_ipcd(d / "i", ipcd_config(port, n))
    b: Server | None = None
    try:
        loadgen("dgram", log, "--count", n, "--size", SIZE)
        wait_until(lambda: call(ctl, "status")["logs"]["stored"] >= n, "ipcd storing", 600, srv)
        start = time.monotonic_ns()
        b, lines = start_b(d / "b", port)
        end = wait_until(lambda: lines() >= n, "ipcd draining", 600, srv, b)
        return n / ((end - start) / 1e9)
    finally:
        srv.stop()
        if b is not None:
            b.stop()


def lag_ipcd(d: Path, rate: int, seconds: float) -> tuple[list[int], float, int]:
    """Lag samples (entries), the intake rate reached, and the lag at the end."""
    port = free_port()
    n = int(rate * seconds)
    b, lines = start_b(d / "b", port)
    srv, ctl, log = start_ipcd(d / "i", ipcd_config(port, n))
    try:
        probe(log, lines, 1, srv, b)
        gen = Loadgen("dgram", log, "--count", n, "--size", SIZE, "--rate", rate, "--conns", 2)
        samples: list[int] = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as watch:
            watch.connect(str(ctl))
            while gen.proc.poll() is None:
                samples.append(int(call(watch, "status")["forward"][0]["lag"]))
                time.sleep(0.1)  # the sampling period, not a wait for a condition
        out, _ = gen.proc.communicate(timeout=60)
        sent = [ln for ln in out.splitlines() if ln.startswith("{")]
        import json

        reached = float(json.loads(sent[-1])["sent_per_s"]) if sent else float("nan")
        wait_until(lambda: lines() >= n + 1, "ipcd catching up", 600, srv, b)
        return samples, reached, samples[-1] if samples else 0
    finally:
        srv.stop()
        b.stop()


def pct(xs: list[int], q: float) -> float:
    xs = sorted(xs)
    return float(xs[min(len(xs) - 1, int(len(xs) * q))]) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="entries per relay and drain run [200000]")
    ap.add_argument("--reps", type=int, default=3, help="alternating reps; the median is shown [3]")
    ap.add_argument("--rate", type=int, default=50_000, help="intake rate for the lag run [50000]")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each lag run [10]")
    a = ap.parse_args()
    if not Path(RSYSLOGD).exists():
        sys.exit("bench/forward.py needs rsyslogd (Debian package rsyslog): see bench/README.md")
    build_loadgen()
    print(f"ipcd forwarding to rsyslogd over TCP: {a.n:,} entries of {SIZE} bytes per run, {a.reps} alternating reps")
    print(machine())
    rates: dict[str, list[float]] = {"rsyslog": [], "ipcd": [], "drain": []}
    lag: list[int] = []
    reached: list[float] = []
    with workdir("ib-fw-") as tmp:
        for rep in range(a.reps):
            rates["rsyslog"].append(relay_rsyslog(tmp / f"r{rep}", a.n))
            rates["ipcd"].append(relay_ipcd(tmp / f"i{rep}", a.n))
            rates["drain"].append(drain_ipcd(tmp / f"d{rep}", a.n))
            samples, got, _ = lag_ipcd(tmp / f"l{rep}", a.rate, a.seconds)
            lag += samples
            reached.append(got)
            print(f"  (rep {rep + 1}/{a.reps} done)", file=sys.stderr, flush=True)
    rows = [
        ["rsyslogd A imuxsock -> omfwd TCP -> rsyslogd B (baseline)", cell(rates["rsyslog"]), "1.00"],
        [
            "ipcd log socket -> store -> forward TCP -> rsyslogd B",
            cell(rates["ipcd"]),
            ratio(rates["ipcd"], rates["rsyslog"]),
        ],
        [
            "ipcd store -> forward TCP -> rsyslogd B (drain)",
            cell(rates["drain"]),
            ratio(rates["drain"], rates["rsyslog"]),
        ],
    ]
    print()
    print(table(["entries/s, first send to last line at B", f"median (min-max) of {a.reps}", "/baseline"], rows))
    rate = statistics.median(reached)
    print(
        f"\n  lag under {rate:,.0f} msg/s intake ({a.seconds:g} s per rep, {len(lag)} samples every 0.1 s): "
        f"median {pct(lag, 0.5):,.0f}, p99 {pct(lag, 0.99):,.0f}, max {max(lag):,} entries "
        f"(~{pct(lag, 0.5) / rate * 1000:.0f} / {pct(lag, 0.99) / rate * 1000:.0f} / {max(lag) / rate * 1000:.0f} ms at that rate)"
    )


if __name__ == "__main__":
    main()
