"""Bad input, overload and slow readers against a real ipcd: errors, never damage."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import socket
import threading
from typing import Any

import pytest
from conftest import Conn, Ipcd, wait_for

ALLOWED = {-32700, -32600, -32601, -32602, -32001, -32002, -32003, -32004, -32005}

# Values of the wrong type, and edge values of the right ones, for every param.
BAD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    -(2**63),
    2**64,
    10**300,
    1e308,
    -1e308,
    0.5,
    -0.0,
    "",
    " ",
    "x" * 5000,
    "\u0000",
    "\ud800",
    "\u202e",
    "ünï",
    "-5m",
    "today",
    "9999-99-99",
    [],
    [1],
    [""],
    ["a"] * 100,
    [[[]]],
    {},
    {"a": 1},
    {"": None},
]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_clean_log(d: Ipcd) -> None:
    err = d.stderr()
    assert "Traceback" not in err, err[-3000:]
    assert "ERROR" not in err, err[-3000:]


def test_every_param_of_every_method_with_bad_values(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    table = d.call("methods")["methods"]
    assert len(table) >= 15
    replies = 0
    for m in table:
        name = m["name"]
        cases: list[Any] = [["too", "many", "positional", "params", "here", "x", "y", "z", "w"], {"no_such_param": 1}]
        for p in m["params"]:
            cases += [{p["name"]: v} for v in BAD_VALUES]
        if name == "shutdown":
            cases = cases[:2]  # a valid call would stop the daemon
        with d.conn() as c:
            for params in cases:
                reply = c.call(name, params)
                replies += 1
                if isinstance(reply, dict) and "code" in reply and "message" in reply and len(reply) <= 3:
                    assert reply["code"] in ALLOWED, (name, params, reply)
                    if reply["code"] == -32602:
                        assert (
                            reply["message"].startswith(("invalid param", "unknown param", "missing param"))
                            or name in reply["message"]
                        ), reply
            assert c.call("ping")["pong"]  # the connection lives on
    assert replies > 500
    assert d.call("status")["pid"] == d.proc.pid
    assert_clean_log(d)


def test_hostile_lines(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    rng = random.Random(7)
    lines = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"jsonrpc":"2.0","id":1e999,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}',
        b'{"jsonrpc":"2.0","id":1,"method":"kv.set","params":{"key":"n","value":' + b"1" * 4400 + b"}}",
        b'{"jsonrpc":"2.0","id":1,"method":"' + b"m" * 100_000 + b'"}',
        b"\x00" * 1000,
        b"\xff" * 1000,
        b'"just a string"',
        b"[" + b"{}," * 10_000 + b"{}]",
        b"kv.get " + b"'" * 3,
    ]
    lines += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))).replace(b"\n", b" ") for _ in range(200)]
    with d.conn(30) as c:
        for line in lines:
            c.send(line + b"\n")
            reply = c.recv_json()
            for r in reply if isinstance(reply, list) else [reply]:
                assert "error" in r, (line[:80], r)
                assert r["error"]["code"] in ALLOWED, (line[:80], r)
        assert c.call("ping")["pong"]
    assert_clean_log(d)


def test_two_hundred_stalled_half_requests_do_not_starve_others(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nmax_connections = 400\n").start()
    stalled = [d.conn() for _ in range(200)]
    try:
        for c in stalled:
            c.send(b'{"jsonrpc":"2.0","id":1,"method":"pi')  # and never the rest
        wait_for(lambda: d.call("status")["connections"]["active"] >= 200, 20, "the stalled connections to be accepted")
        with d.conn() as good:
            for _ in range(200):
                assert good.call("ping")["pong"]
        assert d.call("status")["connections"]["active"] >= 200
    finally:
        for c in stalled:
            c.close()
    wait_for(lambda: d.call("status")["connections"]["active"] == 1, 20, "the stalled connections to be gone")


def _blast(path: str, n: int, start: Any) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(path)
    start.wait()
    for i in range(n):
        s.send(b"<14>Nov 27 10:00:00 blast[1]: message %d" % i)  # blocking: back-pressure, not loss
    s.close()


@pytest.mark.slow
def test_overload_256_clients_while_50000_datagrams_arrive(make_ipcd, capsys) -> None:
    n_dgrams, n_clients, per_client = 50_000, 256, 20
    # While intake is this busy the control threads run below it ([daemon] control_nice), and on a loaded
    # 2-core machine one of the 1280 queries once waited past the default query_timeout_s (5 s) for its
    # turn: what this test checks is that nothing fails or is lost and memory stays bounded, not latency.
    d: Ipcd = make_ipcd("[log]\nrate_limit_burst = 0\n[control]\nquery_timeout_s = 60\n").start()
    before = rss_kib(d.proc.pid)
    ctx = mp.get_context("fork")
    start = ctx.Event()
    sender = ctx.Process(target=_blast, args=(d.log_sock, n_dgrams, start))
    sender.start()
    failures: list[str] = []
    barrier = threading.Barrier(n_clients + 1)
    peak = [before]

    def client(k: int) -> None:
        try:
            with Conn(d.sock, 60) as c:
                barrier.wait(60)
                for i in range(per_client):
                    method = ("ping", "status", "logs.query", "kv.list")[i % 4]
                    reply = c.call(method, {"limit": 5} if method == "logs.query" else None)
                    if not isinstance(reply, dict) or "code" in reply and "message" in reply and len(reply) <= 3:
                        failures.append(f"{k}/{i} {method}: {reply}")
        except Exception as e:  # collected and asserted below
            failures.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait(60)
    start.set()
    while any(t.is_alive() for t in threads) or sender.is_alive():
        peak[0] = max(peak[0], rss_kib(d.proc.pid))
        sender.join(0.05)
    for t in threads:
        t.join(120)
    assert sender.exitcode == 0
    assert not failures, failures[:5]
    wait_for(lambda: d.call("status")["logs"]["stored"] == n_dgrams, 60, "every datagram to be stored")
    st = d.call("status")
    assert st["logs"]["received"] == n_dgrams and st["logs"]["dropped"] == 0
    after = rss_kib(d.proc.pid)
    with capsys.disabled():
        print(f"\n  RSS before {before} KiB, peak {peak[0]} KiB, after {after} KiB")
    assert peak[0] - before < 256 * 1024, "memory must stay bounded"
    assert_clean_log(d)


def test_follower_that_never_reads_is_cut_off_and_disturbs_nobody(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nidle_timeout_s = 1\nstream_queue = 100000\n[log]\nrate_limit_burst = 0\n").start()
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(d.sock)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b'{"jsonrpc":"2.0","id":1,"method":"logs.follow","params":{}}\n')
    try:
        wait_for(lambda: len(d.call("clients")["clients"]) == 2, 10, "the follower to be registered")
        big = b"<14>Nov 27 10:00:00 big: " + b"x" * 8000
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for _ in range(400):  # ~3 MB of entries for a reader that takes none
                s.sendto(big, d.log_sock)
        wait_for(lambda: d.call("status")["logs"]["stored"] == 400, 20, "intake to go on regardless")

        def gone() -> bool:
            return all(c["self"] for c in d.call("clients")["clients"])

        wait_for(gone, 20, "the stalled follower to be cut off after idle_timeout_s of blocked writes")
        assert d.call("ping")["pong"]
    finally:
        stalled.close()
    assert_clean_log(d)


def test_many_connects_and_vanishes(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    for i in range(300):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.sock)
        if i % 3 == 0:
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"status"}\n')
        elif i % 3 == 1:
            s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "logs.follow"}).encode() + b"\n")
        s.close()
    wait_for(lambda: d.call("status")["connections"]["active"] == 1, 20, "all vanished peers to be reaped")
    assert d.call("ping")["pong"]
    assert_clean_log(d)
    assert os.path.exists(d.sock)


def test_datagrams_that_cannot_be_stored_as_json_do_not_poison_anything(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    hostile = [
        b'{"message": "lone \\ud800", "ident": "j"}',
        b'{"message": "nan", "fields": {"x": NaN}}',
        b'{"message": "big", "fields": {"x": 1e999}}',
        b'{"message": "deep", "fields": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"message": "fine", "fields": {"x": 1}}',
    ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for h in hostile:
            s.sendto(h, d.log_sock)
    wait_for(lambda: d.call("status")["logs"]["stored"] == len(hostile), 10, "every datagram to be stored")
    entries = d.call("logs.query", {})["entries"]
    assert [e["format"] for e in entries] == ["plain", "plain", "plain", "plain", "json"]
    assert entries[-1]["fields"] == {"x": 1}
    st = d.call("status")
    assert st["store"]["writer"] == "ok" and st["logs"]["dropped"] == 0
    assert_clean_log(d)
