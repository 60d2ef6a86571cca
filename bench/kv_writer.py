"""Where kv.set's commit should run: a minimal server's kv.set, persisted three ways, beside its ping.

    .venv/bin/python bench/kv_writer.py [--reps 3] [--seconds 2] [--conns 8,32]

An experiment for ipcd's design, not a figure of ipcd's:
bench/baselines/minimal_kv_writer.py (minimal_rpc.py's loop) answers `ping`,
and `kv.set` with --writer none (not stored), thread (group commit on a
writer thread that sends the replies) or process (group commit in a forked
writer process that writes the replies to the client sockets passed to it).
Each rep starts each server fresh and drives it with loadgen (C), closed
loop, alternating; the ratio is to the loop's own ping in the same rep.
Nothing here is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib import (
    BASELINES,
    PYTHON,
    Server,
    build_loadgen,
    cell,
    loadgen,
    machine,
    ratio,
    rpc_line,
    rpc_ready,
    table,
    workdir,
)

MODES = ("none", "thread", "process")
SET = rpc_line("kv.set", {"key": "k", "value": {"n": 1, "s": "abc"}})
PING = rpc_line("ping")


def rate(sock: Path, conns: int, seconds: float, request: str) -> float:
    r = loadgen("rpc", sock, "--conns", conns, "--seconds", seconds, "--warmup", 0.3, "--check", "--request", request)
    if r.get("errors"):
        raise RuntimeError(f"{r['errors']} failed requests: {r}")
    return float(r["requests_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="alternating reps; medians are shown [3]")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per figure [2]")
    ap.add_argument("--conns", default="8,32", help="connection counts [8,32]")
    a = ap.parse_args()
    conns = [int(c) for c in a.conns.split(",")]
    build_loadgen()
    figures: dict[tuple[int, str], list[float]] = {}
    with workdir("ib-kw-") as tmp:
        for rep in range(a.reps):
            for c in conns:
                for mode in MODES:
                    d = tmp / f"{mode}{c}-{rep}"
                    d.mkdir()
                    sock = d / "s.sock"
                    cmd = [PYTHON, BASELINES / "minimal_kv_writer.py", sock, d / "kv.db", "--writer", mode]
                    srv = Server(f"minimal_kv_writer.py --writer {mode}", cmd, log=d / "server.log")
                    try:
                        srv.wait_ready(rpc_ready(sock))
                        if mode == "none":
                            figures.setdefault((c, "ping"), []).append(rate(sock, c, a.seconds, PING))
                        figures.setdefault((c, mode), []).append(rate(sock, c, a.seconds, SET))
                    finally:
                        srv.stop()
            print(f"  (rep {rep + 1}/{a.reps} done)", file=sys.stderr, flush=True)
    print(f"kv.set persisted three ways in minimal_rpc.py's loop: {a.reps} alternating reps of {a.seconds:g} s")
    print(machine())
    rows = []
    for c in conns:
        ping = figures[c, "ping"]
        rows.append([f"c={c}  ping", cell(ping), "1.00"])
        for mode in MODES:
            label = {"none": "not stored", "thread": "writer thread", "process": "writer process"}[mode]
            rows.append([f"c={c}  kv.set, {label}", cell(figures[c, mode]), ratio(figures[c, mode], ping)])
    print(table(["req/s, median (min-max)", f"of {a.reps} reps", "/ping"], rows))


if __name__ == "__main__":
    main()
