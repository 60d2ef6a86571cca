"""Shared state benchmark: ipcd's kv.set/kv.get and publish/subscribe beside redis-server, same run.

    .venv/bin/python bench/kv.py [--reps 3] [--seconds 3] [--conns 1,8,32] [--subscribers 1,8]

Three servers, started once each in a temp dir, driven by the same C load
generator (bench/loadgen; `--redis` speaks RESP):

- bench/baselines/minimal_rpc.py, the JSON-RPC ceiling: `ping`, and kv.set/
  kv.get over a dict with a lock (in memory only);
- redis-server on a unix socket: `--appendonly yes --appendfsync everysec
  --save "" --port 0` (SET is logged to the AOF, fsync'd every second);
- ipcd: kv.set is committed to its SQLite store (WAL) before it answers.

Rows, each requests/s and latency p50/p99, median (min-max) of --reps
alternating reps (minimal, redis, ipcd, minimal, redis, ipcd, ...):

- ping / PING, kv.set / SET k {"n":1,"s":"abc"}, kv.get / GET k, closed
  loop at each of --conns connections;
- publish -> subscribe: for each of --subscribers, N subscribers on
  channel "bench", one publisher in a closed loop; publishes/s,
  deliveries/s, delivery latency (receive time minus the publisher's clock
  in the message). When --conns has 1, a line after the table sets each
  server's deliveries/s beside the ceiling's ping at c=1 (one connection
  in a closed loop, as the publisher is), same reps;
- pipelined: --pipe-conns connections with 16 requests outstanding each, and
  beside it redis-benchmark -P 16 on the same redis (its own client);
- kv.set with an fsync per commit (unless --no-fsync): a second ipcd with
  `[kv] durability = "fsync"` beside a redis-server with `--appendfsync
  always`, closed loop at each of --conns and pipelined, in a table of its
  own beside ipcd's default durability from the same reps.

Nothing is asserted: the figures are for people.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from benchlib import (
    build_loadgen,
    call,
    cell,
    loadgen,
    machine,
    ratio,
    rpc_line,
    start_ipcd,
    start_minimal_rpc,
    start_redis,
    table,
    workdir,
)

VALUE = {"n": 1, "s": "abc"}
VALUE_JSON = '{"n":1,"s":"abc"}'
SERVERS = ("minimal", "redis", "ipcd")
REQUESTS = {
    "ping": {"minimal": rpc_line("ping"), "ipcd": rpc_line("ping"), "redis": "PING"},
    "kv.set": {
        "minimal": rpc_line("kv.set", {"key": "k", "value": VALUE}),
        "ipcd": rpc_line("kv.set", {"key": "k", "value": VALUE}),
        "redis": f"SET k {VALUE_JSON}",
    },
    "kv.get": {
        "minimal": rpc_line("kv.get", {"key": "k"}),
        "ipcd": rpc_line("kv.get", {"key": "k"}),
        "redis": "GET k",
    },
}


def redis_benchmark(sock: Path, conns: int, seconds: float) -> dict[str, dict[str, float]]:
    """redis-benchmark -P 16 -t set,get: {"kv.set": {...}, "kv.get": {...}} in loadgen's terms."""
    n = int(max(100_000, 250_000 * seconds))
    cmd = ["redis-benchmark", "-s", str(sock), "-P", "16", "-c", str(conns), "-t", "set,get", "-n", str(n)]
    cmd += ["-d", str(len(VALUE_JSON)), "--csv"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    out = {}
    for row in csv.DictReader(io.StringIO(p.stdout)):
        name = {"SET": "kv.set", "GET": "kv.get"}.get(row["test"])
        if name:
            out[name] = {
                "requests_per_s": float(row["rps"]),
                "p50_us": float(row["p50_latency_ms"]) * 1000,
                "p99_us": float(row["p99_latency_ms"]) * 1000,
            }
    return out


def pubsub_row(subscribers: int) -> str:
    return f"publish->subscribe, {subscribers} subscriber{'' if subscribers == 1 else 's'}"


def failures(name: str, samples: dict[str, list[dict]]) -> list[str]:
    """A line per server whose reps of row `name` had errors, failed checks, closes or lags."""
    out = []
    for srv, rs in samples.items():
        bad = {k: sum(r.get(k, 0) for r in rs) for k in ("errors", "check_failed", "closed", "lagged")}
        if any(bad.values()):
            out.append(f"{name} / {srv}: " + ", ".join(f"{k} {v:,}" for k, v in bad.items() if v))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="alternating reps per figure; medians are shown [3]")
    ap.add_argument("--seconds", type=float, default=3, help="measured seconds per rep [3]")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each [0.5]")
    ap.add_argument("--conns", default="1,8,32", help="connection counts for the closed loops [1,8,32]")
    ap.add_argument("--subscribers", default="1,8", help="subscriber counts for publish/subscribe [1,8]")
    ap.add_argument("--pipe-conns", type=int, default=8, help="connections for the pipelined rows [8]")
    ap.add_argument("--no-fsync", dest="fsync", action="store_false", help="skip the fsync-per-commit table")
    a = ap.parse_args()
    conns = [int(c) for c in a.conns.split(",")]
    subscribers = [int(n) for n in a.subscribers.split(",")]
    build_loadgen()
    have_rb = shutil.which("redis-benchmark") is not None
    timing = ("--seconds", a.seconds, "--warmup", a.warmup)
    # samples[row][server] -> loadgen results
    samples: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    fsync_samples: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    rows: list[tuple[str, str]] = []  # (row name, kind)
    for c in conns:
        for op in REQUESTS:
            rows.append((f"{op} c={c}", "rpc"))
    for n in subscribers:
        rows.append((pubsub_row(n), "pubsub"))
    for op in ("kv.set", "kv.get"):
        rows.append((f"{op} c={a.pipe_conns} pipelined 16", "pipe"))

    with workdir("ib-kv-") as tmp, contextlib.ExitStack() as stack:
        socks: dict[str, Path] = {}
        srv, socks["minimal"] = start_minimal_rpc(tmp / "m")
        stack.callback(srv.stop)
        srv, socks["redis"] = start_redis(tmp / "r")
        stack.callback(srv.stop)
        srv, socks["ipcd"], _ = start_ipcd(tmp / "i")
        stack.callback(srv.stop)
        if a.fsync:
            srv, socks["redis-always"] = start_redis(tmp / "ra", appendfsync="always")
            stack.callback(srv.stop)
            srv, socks["ipcd-fsync"], _ = start_ipcd(tmp / "if", '[kv]\ndurability = "fsync"\n', name="ipcd-fsync")
            stack.callback(srv.stop)
            call(socks["ipcd-fsync"], "kv.set", {"key": "k", "value": VALUE})
        call(socks["minimal"], "kv.set", {"key": "k", "value": VALUE})
        call(socks["ipcd"], "kv.set", {"key": "k", "value": VALUE})

        def run(server: str, mode: str, *args: object) -> dict:
            return loadgen(mode, socks[server], *args, *(["--redis"] if server.startswith("redis") else []))

        for rep in range(a.reps):
            for c in conns:
                for op, reqs in REQUESTS.items():
                    for server in SERVERS:
                        r = run(server, "rpc", "--conns", c, "--check", "--request", reqs[server], *timing)
                        samples[f"{op} c={c}"][server].append(r)
            for n in subscribers:
                for server in SERVERS:
                    samples[pubsub_row(n)][server].append(run(server, "pubsub", "--subscribers", n, *timing))
            for op in ("kv.set", "kv.get"):
                name = f"{op} c={a.pipe_conns} pipelined 16"
                for server in SERVERS:
                    args = ("--conns", a.pipe_conns, "--pipeline", 16, "--check", "--request", REQUESTS[op][server])
                    samples[name][server].append(run(server, "rpc", *args, *timing))
            if a.fsync:
                for name, extra in [(f"kv.set c={c}", ("--conns", c)) for c in conns] + [
                    (f"kv.set c={a.pipe_conns} pipelined 16", ("--conns", a.pipe_conns, "--pipeline", 16))
                ]:
                    for server, reqs in (("redis-always", "redis"), ("ipcd-fsync", "ipcd")):
                        args = (*extra, "--check", "--request", REQUESTS["kv.set"][reqs])
                        fsync_samples[name][server].append(run(server, "rpc", *args, *timing))
            if have_rb:
                rb = redis_benchmark(socks["redis"], a.pipe_conns, a.seconds)
                for op in ("kv.set", "kv.get"):
                    samples[f"{op} c={a.pipe_conns} pipelined 16"]["redis-benchmark"].append(rb[op])
            print(f"  (rep {rep + 1}/{a.reps} done)", file=sys.stderr, flush=True)

    print()
    print(f"ipcd kv and channels: {a.reps} alternating reps of {a.seconds:g} s (+{a.warmup:g} s warmup) each")
    print("minimal = bench/baselines/minimal_rpc.py (JSON-RPC ceiling, kv in a dict); redis = redis-server")
    print("(AOF, fsync every second) on a unix socket; all driven by loadgen (C). Median (min-max) of the reps.")
    print(machine())
    out = []
    notes = []
    for name, kind in rows:
        s = samples[name]
        if kind == "pubsub":
            metrics = [("publishes/s", "publishes_per_s"), ("deliveries/s", "deliveries_per_s")]
            metrics += [("delivery p50 us", "p50_us"), ("delivery p99 us", "p99_us")]
        else:
            metrics = [("req/s", "requests_per_s"), ("p50 us", "p50_us"), ("p99 us", "p99_us")]
        for label, key in metrics:
            x = {srv: [r[key] for r in rs] for srv, rs in s.items()}
            line = [f"{name}  {label}", cell(x.get("minimal", [])), cell(x.get("redis", [])), cell(x.get("ipcd", []))]
            line += [ratio(x.get("ipcd", []), x.get("minimal", [])), ratio(x.get("ipcd", []), x.get("redis", []))]
            line.append(cell(x.get("redis-benchmark", [])) if kind == "pipe" and have_rb else "")
            out.append(line)
        notes += failures(name, s)
    header = ["", "minimal", "redis", "ipcd", "ipcd/minimal", "ipcd/redis", "redis-benchmark -P 16"]
    print(table(header, out))
    if 1 in conns:
        ping = [r["requests_per_s"] for r in samples["ping c=1"]["minimal"]]
        for count in subscribers:
            ps = samples[pubsub_row(count)]
            each = {srv: ratio([r["deliveries_per_s"] for r in ps[srv]], ping) for srv in ("ipcd", "minimal")}
            print(
                f"  {pubsub_row(count)}: deliveries/s against the ceiling's ping at c=1: "
                f"ipcd {each['ipcd']}, minimal {each['minimal']}"
            )
    if a.fsync:
        print()
        print('kv.set with an fsync per commit: ipcd [kv] durability = "fsync" (synchronous=FULL), redis')
        print('--appendfsync always; "ipcd normal" is the table above\'s ipcd (synchronous=NORMAL), same reps.')
        out = []
        for name, s in fsync_samples.items():
            for label, key in (("req/s", "requests_per_s"), ("p99 us", "p99_us")):
                x = {srv: [r[key] for r in rs] for srv, rs in s.items()}
                normal = [r[key] for r in samples[name]["ipcd"]]
                line = [f"{name}  {label}", cell(x["redis-always"]), cell(x["ipcd-fsync"]), cell(normal)]
                out.append([*line, ratio(x["ipcd-fsync"], normal), ratio(x["ipcd-fsync"], x["redis-always"])])
            notes += failures(name, s)
        header = ["", "redis always", "ipcd fsync", "ipcd normal", "fsync/normal", "ipcd/redis"]
        print(table(header, out))
    for n in notes:
        print(f"  ! {n}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
