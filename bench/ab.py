"""Builds of ipcd side by side: one request's rate, build by build, beside the ceiling's ping.

    .venv/bin/python bench/ab.py BUILD [BUILD ...] [--request kv.set] [--conns 8,32] [--reps 5] [--seconds 3]
    .venv/bin/python bench/ab.py BUILD [BUILD ...] --subscribers 1

A BUILD is a git revision of this repository (`HEAD~1`, a branch, a commit),
checked out for the run in a temp worktree and removed afterwards, or a
directory holding a tree of ipcd (a worktree of your own, with a patch to
try), or `.` for this checkout as it is. Each build's daemon runs with
that tree as its working directory and on PYTHONPATH. The venv installs
ipcd in editable mode, pointing at this checkout, so a build started any
other way would run this checkout's code under another name. Before the
reps start, each build is asked which `ipcd/__init__.py` it imports, and
the run stops if that file is not in the build's own tree.

Reps alternate: the ceiling's ping (bench/baselines/minimal_rpc.py), then
the request on each build, closed loop from loadgen (C) at each of
--conns. With --subscribers N, each build is measured publishing instead:
one publisher in a closed loop, N subscribers, deliveries/s, beside the
ceiling's ping at c=1 (one connection in a closed loop, as the publisher
is). Three columns are printed:

- each build's req/s (or deliveries/s), as the median (min-max) of the
  reps;
- the 99th percentile of a request's latency, the median of the reps
  (not for --subscribers);
- the server process's CPU time per request (the median of the reps; of
  ipcd, its control process's, not the log process's), from
  /proc/PID/stat over each figure's warmup and measured seconds, at the
  measured rate;
- each build against the ceiling's ping (its rate, then its p99);
- each build against the first BUILD.

Each ratio is the ratio of the medians and, in brackets, the median of
each rep's own ratio. A rep's figures ran seconds apart, so on a VM whose
speed drifts, the bracketed figure is the one to read. A failed request
stops the run. Nothing here is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import (
    PYTHON,
    REPO,
    build_loadgen,
    call,
    cell,
    cpu_seconds,
    fmt,
    loadgen,
    machine,
    median,
    ratio,
    rpc_line,
    start_ipcd,
    start_minimal_rpc,
    table,
    workdir,
)

VALUE = {"n": 1, "s": "abc"}
REQUESTS = {
    "ping": rpc_line("ping"),
    "kv.set": rpc_line("kv.set", {"key": "k", "value": VALUE}),
    "kv.get": rpc_line("kv.get", {"key": "k"}),
}


def checkout(build: str, tmp: Path, n: int, stack: contextlib.ExitStack) -> Path:
    """The tree of `build`: `.`, a directory, or a revision checked out in a worktree (removed on the way out)."""
    if build == ".":
        return REPO
    path = Path(build)
    if path.is_dir():
        if not (path / "ipcd" / "__init__.py").is_file():
            sys.exit(f"{build}: no ipcd/__init__.py in it: not a tree of ipcd")
        return path.resolve()
    tree = tmp / f"build{n}"
    git = ["git", "-C", str(REPO)]
    try:
        subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(tree), build], check=True)
    except subprocess.CalledProcessError:
        sys.exit(f"{build}: neither a directory nor a revision git can check out")
    stack.callback(subprocess.run, [*git, "worktree", "remove", "--force", str(tree)], check=False)
    return tree


def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def check_imports(tree: Path) -> None:
    """Stop unless Python, started as the daemon will be, imports ipcd from `tree`."""
    cmd = [PYTHON, "-c", "import ipcd; print(ipcd.__file__)"]
    found = subprocess.run(cmd, cwd=tree, env=env_for(tree), capture_output=True, text=True, check=True).stdout
    if not Path(found.strip()).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"{tree}: Python imports ipcd from {found.strip()}, not from this tree")


def rate(sock: Path, conns: int, seconds: float, warmup: float, request: str) -> tuple[float, float]:
    """Requests per second and the p99 latency in us."""
    timing = ("--seconds", seconds, "--warmup", warmup)
    r = loadgen("rpc", sock, "--conns", conns, *timing, "--check", "--request", request)
    if r.get("errors") or r.get("check_failed"):
        raise RuntimeError(f"failed requests: {r}")
    return float(r["requests_per_s"]), float(r["p99_us"])


def deliveries(sock: Path, subscribers: int, seconds: float, warmup: float) -> tuple[float, float]:
    """Deliveries per second (no latency: nan)."""
    timing = ("--seconds", seconds, "--warmup", warmup)
    r = loadgen("pubsub", sock, "--subscribers", subscribers, *timing)
    if r.get("errors") or r.get("lagged") or r.get("closed"):
        raise RuntimeError(f"failed or lost deliveries: {r}")
    return float(r["deliveries_per_s"]), float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builds", nargs="+", metavar="BUILD", help="git revisions, tree directories, or . (this checkout)")
    ap.add_argument("--request", default="kv.set", help="ping, kv.set, kv.get, or a whole request line [kv.set]")
    ap.add_argument("--conns", default="8,32", help="connection counts [8,32]")
    ap.add_argument("--reps", type=int, default=5, help="alternating reps [5]")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per figure [3]")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each [0.5]")
    ap.add_argument(
        "--subscribers",
        type=int,
        help="instead of --request: publish to this many subscribers (deliveries/s, beside the ceiling's ping at c=1)",
    )
    a = ap.parse_args()
    request = REQUESTS.get(a.request, a.request)
    conns = [1] if a.subscribers else [int(c) for c in a.conns.split(",")]
    build_loadgen()
    names = [f"{i + 1}: {b}" for i, b in enumerate(a.builds)]
    figures: dict[tuple[int, str], list[float]] = {}
    cpu_us: dict[tuple[int, str], list[float]] = {}  # the server's CPU per request
    p99: dict[tuple[int, str], list[float]] = {}
    with workdir("ib-ab-") as tmp, contextlib.ExitStack() as stack:
        socks: dict[str, Path] = {}
        pids: dict[str, int] = {}
        for i, (build, name) in enumerate(zip(a.builds, names, strict=True)):
            tree = checkout(build, tmp, i, stack)
            check_imports(tree)
            srv, socks[name], _ = start_ipcd(tmp / f"d{i}", name=name, cwd=tree, env=env_for(tree))
            stack.callback(srv.stop)
            pids[name] = srv.pid
            call(socks[name], "kv.set", {"key": "k", "value": VALUE})  # the key a kv.get reads
        srv, ceiling = start_minimal_rpc(tmp / "m")
        stack.callback(srv.stop)
        pids["ceiling"] = srv.pid

        def measure(c: int, name: str, run: Callable[..., tuple[float, float]], *args: Any) -> None:
            before = cpu_seconds(pids[name])
            got, p99_us = run(*args)
            used = cpu_seconds(pids[name]) - before
            figures.setdefault((c, name), []).append(got)
            p99.setdefault((c, name), []).append(p99_us)
            cpu_us.setdefault((c, name), []).append(used / (got * (a.seconds + a.warmup)) * 1e6)

        for rep in range(a.reps):
            for c in conns:
                measure(c, "ceiling", rate, ceiling, c, a.seconds, a.warmup, REQUESTS["ping"])
                for name in names:
                    if a.subscribers:
                        measure(c, name, deliveries, socks[name], a.subscribers, a.seconds, a.warmup)
                    else:
                        measure(c, name, rate, socks[name], c, a.seconds, a.warmup, request)
            print(f"  (rep {rep + 1}/{a.reps} done)", file=sys.stderr, flush=True)
    print()
    what = a.request if a.request in REQUESTS else request
    if a.subscribers:
        what = f"publish -> {a.subscribers} subscriber(s), deliveries/s, one publisher"
    print(f"ab: {what}, closed loop, {a.reps} alternating reps of {a.seconds:g} s")
    print("ceiling = bench/baselines/minimal_rpc.py's ping; median (min-max) per s; ratios [median of per-rep ratios]")
    print(machine())
    rows = []
    for c in conns:
        ping, ping_p99 = figures[(c, "ceiling")], p99[(c, "ceiling")]
        cpu = fmt(median(cpu_us[(c, "ceiling")]), 1)
        rows.append([f"c={c}  ceiling ping", cell(ping), fmt(median(ping_p99)), cpu, "", "", ""])
        first = figures[(c, names[0])]
        for name in names:
            x, lat = figures[(c, name)], p99[(c, name)]
            cpu = fmt(median(cpu_us[(c, name)]), 1)
            vs_first = ratio(x, first) if name != names[0] else ""
            lat_ratio = "" if a.subscribers else ratio(lat, ping_p99)
            rows.append([f"c={c}  {name}", cell(x), fmt(median(lat)), cpu, ratio(x, ping), lat_ratio, vs_first])
    header = ["", "per s", "p99 us", "CPU us each", "/ ceiling ping", "p99 / ceiling's", "/ build 1"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
