"""Five ipcd benchmarks in turn: control, intake, isolation, kv, forward; each figure beside its baselines.

    make bench                                   # builds bench/loadgen, then this
    .venv/bin/python bench/run_all.py [--reps 3] [--seconds 3] [-n 1000000] [--only control,kv]

Each runner is a process of its own (bench/control.py, intake.py,
isolation.py, kv.py, forward.py: see their docstrings and bench/README.md); one that
fails is reported and the others still run.  overload.py, hotpath.py,
kv_writer.py and ab.py are not among them: run those on their own.  Takes a while at the defaults
(about 20 minutes on 2 cores): use --seconds 1 -n 100000 for a quick look.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchlib import BENCH, PYTHON, build_loadgen, dgram_qlen, machine

RUNNERS = ("control", "intake", "isolation", "kv", "forward")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="alternating reps per figure [3]")
    ap.add_argument("--seconds", type=float, default=3, help="measured seconds per timed rep [3]")
    ap.add_argument("-n", type=int, default=1_000_000, help="datagrams per intake run [1000000]")
    ap.add_argument("--iso-n", type=int, default=300_000, help="datagrams per isolation run [300000]")
    ap.add_argument("--only", default=",".join(RUNNERS), help=f"a comma-separated subset of {','.join(RUNNERS)}")
    a = ap.parse_args()
    only = [r for r in a.only.split(",") if r]
    unknown = set(only) - set(RUNNERS)
    if unknown:
        ap.error(f"unknown runner(s): {', '.join(sorted(unknown))}")
    build_loadgen()
    print("ipcd benchmarks")
    print(machine())
    print(f"net.unix.max_dgram_qlen = {dgram_qlen()}; load from bench/loadgen (C)", flush=True)
    args = {
        "control": ["--reps", a.reps, "--seconds", a.seconds],
        "intake": ["--reps", a.reps, "-n", a.n],
        "isolation": ["--reps", a.reps, "--seconds", a.seconds, "-n", a.iso_n],
        "kv": ["--reps", a.reps, "--seconds", a.seconds],
        "forward": ["--reps", a.reps, "-n", max(a.n // 5, 1000), "--seconds", max(a.seconds * 3, 3)],
    }
    failed = []
    for name in RUNNERS:
        if name not in only:
            continue
        print(f"\n=== bench/{name}.py", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run([PYTHON, str(BENCH / f"{name}.py"), *map(str, args[name])]).returncode
        print(f"(bench/{name}.py: {time.monotonic() - t0:.0f} s, exit {rc})", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
