"""Control socket benchmark: ipcd's `ping` beside the minimal JSON-RPC server, same run.

    .venv/bin/python bench/control.py [--reps 3] [--seconds 3] [--warmup 0.5]

The load comes from bench/loadgen (C, one epoll thread), so the client takes
no GIL from the server.  The ceiling is bench/baselines/minimal_rpc.py: the
least a socketserver.ThreadingUnixStreamServer JSON-RPC server must do.
Scenarios, each as requests/s and latency (p50, p99), the median of --reps
alternating reps (baseline, ipcd, baseline, ipcd, ...) with the spread
(min-max) in brackets:

- ping, 1 connection, closed loop, loadgen and server pinned to CPU 0 (the
  cost of one request on one core, without cross-core wake-ups);
- ping, 8 and 32 connections, closed loop, unpinned;
- connect + ping + close, in a loop (a thread per connection on the server).

Nothing is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import defaultdict

from benchlib import (
    PING,
    build_loadgen,
    cell,
    loadgen,
    machine,
    pinned,
    ratio,
    start_ipcd,
    start_minimal_rpc,
    table,
    workdir,
)

SERVERS = ("minimal_rpc.py", "ipcd")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="alternating reps per figure; medians are shown [3]")
    ap.add_argument("--seconds", type=float, default=3, help="measured seconds per rep [3]")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each [0.5]")
    a = ap.parse_args()
    build_loadgen()
    timing = ("--seconds", a.seconds, "--warmup", a.warmup)
    scenarios = [
        ("ping c=1, CPU 0 only", "rpc", ("--conns", 1, "--check", *timing), 0),
        ("ping c=8", "rpc", ("--conns", 8, "--check", *timing), None),
        ("ping c=32", "rpc", ("--conns", 32, "--check", *timing), None),
        ("connect+ping+close", "connect", ("--request", PING, *timing), None),
    ]
    # samples[scenario][server] -> list of loadgen results
    samples: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with workdir("ib-ctl-") as tmp, contextlib.ExitStack() as stack:
        base, base_sock = start_minimal_rpc(tmp / "m")
        stack.callback(base.stop)
        ipcd, ipcd_sock, _ = start_ipcd(tmp / "i")
        stack.callback(ipcd.stop)
        targets = {"minimal_rpc.py": (base, base_sock), "ipcd": (ipcd, ipcd_sock)}
        for rep in range(a.reps):
            for name, mode, args, cpu in scenarios:
                for server in SERVERS:
                    srv, sock = targets[server]
                    with pinned(srv.pid, cpu) if cpu is not None else contextlib.nullcontext():
                        r = loadgen(mode, sock, *args, pin=cpu)
                    samples[name][server].append(r)
            print(f"  (rep {rep + 1}/{a.reps} done)", flush=True)

    print()
    print(f"ipcd control socket: {a.reps} alternating reps of {a.seconds:g} s (+{a.warmup:g} s warmup) each")
    print(machine())
    print("loadgen (C, epoll) drives both servers; median (min-max) of the reps")
    rows = []
    notes = []
    for name, mode, _, _ in scenarios:
        rate = "requests_per_s" if mode == "rpc" else "connections_per_s"
        unit = "req/s" if mode == "rpc" else "conn/s"
        b, i = samples[name]["minimal_rpc.py"], samples[name]["ipcd"]
        for label, key, digits in ((unit, rate, 0), ("p50 us", "p50_us", 0), ("p99 us", "p99_us", 0)):
            bx, ix = [r[key] for r in b], [r[key] for r in i]
            rows.append([f"{name}  {label}", cell(bx, digits), cell(ix, digits), ratio(ix, bx)])
        for server, rs in samples[name].items():
            bad = {k: sum(r.get(k, 0) for r in rs) for k in ("errors", "check_failed", "closed", "failed")}
            if any(bad.values()):
                notes.append(f"{name} / {server}: " + ", ".join(f"{k} {v}" for k, v in bad.items() if v))
    print(table(["", "minimal_rpc.py (ceiling)", "ipcd", "ipcd/ceiling"], rows))
    for n in notes:
        print(f"  ! {n}")


if __name__ == "__main__":
    main()
