"""The control protocol against a real ipcd over its real socket."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading

from conftest import Conn, Ipcd, needs_program, wait_only_connection


def test_ping_and_status(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        pong = c.call("ping")
        assert pong["pong"] is True and isinstance(pong["time"], float)
        st = c.call("status")
    assert st["pid"] == ipcd.proc.pid
    assert st["activation"] == "self"
    assert st["sockets"]["control"] == ipcd.sock
    assert st["connections"]["active"] >= 1
    assert st["uptime_s"] >= 0


def test_status_counters_are_real(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        before = c.call("status")["requests"]
        for _ in range(7):
            c.call("ping")
        c.call("no.such.method")
        after = c.call("status")["requests"]
    # 7 pings + 1 failed call + the second status itself
    assert after["total"] - before["total"] == 9
    assert after["errors"] - before["errors"] == 1


def test_methods_lists_the_registry(ipcd: Ipcd) -> None:
    table = {m["name"]: m for m in ipcd.call("methods")["methods"]}
    for name, role in (("ping", "read"), ("status", "read"), ("methods", "read"), ("shutdown", "admin")):
        assert table[name]["role"] == role
        assert table[name]["doc"]
        assert isinstance(table[name]["params"], list)


def test_unknown_method_and_bad_params(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        err = c.call("nope")
        assert err["code"] == -32601
        err = c.call("ping", {"bogus": 1})
        assert err["code"] == -32602 and err["data"]["param"] == "bogus"
        err = c.call("status", [1, 2])
        assert err["code"] == -32602
        assert c.call("ping")["pong"]  # the connection lives on


def test_notification_gets_no_reply(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send_json({"jsonrpc": "2.0", "method": "ping"})
        c.send_json({"jsonrpc": "2.0", "method": "no.such"})  # errors of notifications: silent too
        c.send_json({"jsonrpc": "2.0", "id": "after", "method": "ping"})
        assert c.recv_json()["id"] == "after"


def test_batch(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send_json(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                {"jsonrpc": "2.0", "method": "ping"},
                {"jsonrpc": "2.0", "id": 2, "method": "nope"},
                7,
            ]
        )
        replies = c.recv_json()
        assert isinstance(replies, list) and len(replies) == 3
        assert replies[0]["id"] == 1 and replies[0]["result"]["pong"]
        assert replies[1]["id"] == 2 and replies[1]["error"]["code"] == -32601
        assert replies[2]["id"] is None and replies[2]["error"]["code"] == -32600
        # A batch of notifications only: no reply at all.
        c.send_json([{"jsonrpc": "2.0", "method": "ping"}, {"jsonrpc": "2.0", "method": "ping"}])
        c.send_json({"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert c.recv_json()["id"] == 3
        c.send(b"[]\n")
        assert c.recv_json()["error"]["code"] == -32600


def test_parse_error_has_null_id_and_connection_survives(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send(b'{"jsonrpc": "2.0", "id": 5, "method": \n')
        reply = c.recv_json()
        assert reply == {"jsonrpc": "2.0", "id": None, "error": reply["error"]}
        assert reply["error"]["code"] == -32700
        c.send(b"\xff\xfe{}\n")
        assert c.recv_json()["error"]["code"] == -32700
        assert c.call("ping")["pong"]


def test_pipelined_requests_answered_in_order(ipcd: Ipcd) -> None:
    n = 500
    with ipcd.conn() as c:
        c.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}).encode() + b"\n" for i in range(n)))
        ids = [c.recv_json()["id"] for _ in range(n)]
    assert ids == list(range(n))


@needs_program("socat")
def test_plain_command_over_socat(ipcd: Ipcd) -> None:
    out = subprocess.run(
        ["socat", "-t", "5", "-", f"UNIX-CONNECT:{ipcd.sock}"],
        input=b"ping\nstatus\nno.such thing\n",
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in lines] == [None, None, None]
    assert lines[0]["result"]["pong"] is True
    assert lines[1]["result"]["pid"] == ipcd.proc.pid
    assert lines[2]["error"]["code"] == -32601


def test_plain_command_positional_params_are_checked(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send(b"ping extra\n")
        assert c.recv_json()["error"]["code"] == -32602
        c.send(b'ping "unterminated\n')
        assert c.recv_json()["error"]["code"] == -32700


def test_fifty_clients_times_hundred_requests(ipcd: Ipcd) -> None:
    clients, per_client = 50, 100
    before = ipcd.call("status")["requests"]["total"]
    barrier = threading.Barrier(clients)
    failures: list[str] = []

    def worker(k: int) -> None:
        try:
            with ipcd.conn(30.0) as c:
                barrier.wait(30)
                for i in range(per_client):
                    rid = f"{k}-{i}"
                    c.send_json({"jsonrpc": "2.0", "id": rid, "method": "ping"})
                    reply = c.recv_json()
                    if reply.get("id") != rid or not reply["result"]["pong"]:
                        failures.append(f"{rid}: {reply}")
                        return
        except Exception as e:  # collected, asserted below
            failures.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    after = ipcd.call("status")
    assert after["requests"]["total"] - before >= clients * per_client
    assert after["connections"]["total"] >= clients


def test_bad_clients_do_not_disturb_others(ipcd: Ipcd) -> None:
    rng = random.Random(1)
    good = ipcd.conn()
    bad = []
    # Garbage, half a line, a vanishing peer, a reset.
    g = ipcd.conn()
    g.send(bytes(rng.randrange(256) for _ in range(4096)).replace(b"\n", b"") + b"\n")
    bad.append(g)
    h = ipcd.conn()
    h.send(b'{"jsonrpc":"2.0","id":1,"meth')
    bad.append(h)
    v = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    v.connect(ipcd.sock)
    v.close()
    r = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    r.connect(ipcd.sock)
    r.sendall(b'{"jsonrpc":"2.0","id":1,"method":"status"}\n' * 100)
    r.close()  # gone before reading its replies
    try:
        for _ in range(50):
            assert good.call("ping")["pong"]
        # The garbage got parse errors, and its connection still works.
        assert g.recv_json()["error"]["code"] in (-32700, -32601)
        assert g.call("ping")["pong"]
    finally:
        good.close()
        for c in bad:
            c.close()
    assert ipcd.call("ping")["pong"]


def test_unicode_round_trip_and_ids_of_every_kind(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        for rid in ("ünïcødé ✓", 0, -5, 2.5, None):
            c.send_json({"jsonrpc": "2.0", "id": rid, "method": "ping"})
            assert c.recv_json()["id"] == rid


def test_shutdown_method_stops_daemon(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        res = c.call("shutdown")
        assert res["stopping"] is True and res["pid"] == ipcd.proc.pid
    assert ipcd.wait() == 0
    assert not os.path.exists(ipcd.sock)


def test_connection_limit_counts_in_status(make_ipcd) -> None:
    # No slots reserved for admins: the suite may run as root, an admin.
    d: Ipcd = make_ipcd("[control]\nmax_connections = 2\nadmin_reserved_connections = 0\n").start()
    with d.conn() as a:
        wait_only_connection(a, "the readiness check's connection to be gone")
        with d.conn() as b:
            assert b.call("ping")["pong"]
            with Conn(d.sock) as c:
                err = c.recv_json()
                assert err["error"]["code"] == -32002 and err["error"]["data"]["limit"] == "max_connections"
                assert c.at_eof()
            assert a.call("status")["connections"]["refused"] == 1
        wait_only_connection(a, "b's connection to be gone")
        with d.conn() as again:  # b's place is free again
            assert again.call("status")["connections"]["active"] == 2
