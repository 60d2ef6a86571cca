"""Connection churn: one client's connect + ping + close while others churn connections and pings keep the server busy.

    .venv/bin/python bench/churn.py [BUILD ...] [--reps 3] [--seconds 3] [--churners 4] [--busy 16]

A user who opens connections and drops them as fast as it can fills the
kernel's accept queue; every other client's connection waits behind those,
for as long as the server takes to accept them.  Each rep, for the ceiling
(bench/baselines/minimal_rpc.py) and each BUILD of ipcd (as bench/ab.py
takes them: a git revision, a tree, or `.`, the default), in turn:

- `--busy` connections ping flat out (loadgen rpc, closed loop), so that
  the server's threads want the GIL;
- `--churners` loadgen processes connect, write a ping and close without
  reading the reply (`loadgen connect --drop`), in a loop, flat out or
  `--churn-rate` connections a second in all;
- meanwhile one loadgen connects, pings, reads the reply and closes, in a
  loop, for --seconds: the latency of that (its p50, p99 and max) is what
  another client sees.

Medians of the reps, with the spread.  Nothing is asserted: the figures
are for people.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from ab import check_imports, checkout, env_for
from benchlib import Loadgen, build_loadgen, cell, loadgen, machine, start_ipcd, start_minimal_rpc, table, workdir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "builds", nargs="*", default=["."], metavar="BUILD", help="git revisions, tree directories, or . [.]"
    )
    ap.add_argument("--reps", type=int, default=3, help="alternating reps [3]")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per rep [3]")
    ap.add_argument("--churners", type=int, default=4, help="processes that connect and drop [4]")
    ap.add_argument(
        "--churn-rate", type=int, default=0, help="connections a second, all churners together; 0: flat out [0]"
    )
    ap.add_argument("--busy", type=int, default=16, help="connections pinging flat out [16]")
    a = ap.parse_args()
    build_loadgen()
    names = ["ceiling"] + [f"{i + 1}: {b}" for i, b in enumerate(a.builds)]
    got: dict[str, list[dict]] = {n: [] for n in names}
    with workdir("ib-churn-") as tmp, contextlib.ExitStack() as stack:
        socks = {}
        srv, socks["ceiling"] = start_minimal_rpc(tmp / "m")
        stack.callback(srv.stop)
        for i, (build, name) in enumerate(zip(a.builds, names[1:], strict=True)):
            tree = checkout(build, tmp, i, stack)
            check_imports(tree)
            srv, socks[name], _ = start_ipcd(tmp / f"d{i}", name=name, cwd=tree, env=env_for(tree))
            stack.callback(srv.stop)
        for rep in range(a.reps):
            for name in names:
                sock = socks[name]
                load = [Loadgen("rpc", sock, "--conns", a.busy, "--seconds", 3600)]
                pace = ("--rate", max(1, a.churn_rate // a.churners)) if a.churn_rate else ()
                load += [Loadgen("connect", sock, "--drop", "--seconds", 3600, *pace) for _ in range(a.churners)]
                try:
                    got[name].append(loadgen("connect", sock, "--seconds", a.seconds, "--warmup", 0.5))
                finally:
                    for lg in load:
                        lg.signal(signal.SIGTERM)
                    for lg in load:
                        lg.finish()
            print(f"  (rep {rep + 1}/{a.reps} done)", file=sys.stderr, flush=True)
    print()
    print(
        f"churn: connect + ping + close beside {a.churners} churners and {a.busy} busy connections, {a.reps} reps of {a.seconds:g} s"
    )
    print(machine())
    rows = []
    for name in names:
        rs = got[name]
        rows.append(
            [
                name,
                cell([r["connections_per_s"] for r in rs]),
                cell([r["p50_us"] / 1000 for r in rs], 1),
                cell([r["p99_us"] / 1000 for r in rs], 1),
                cell([r["max_us"] / 1000 for r in rs], 1),
            ]
        )
    print(table(["", "conn/s", "p50 ms", "p99 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
