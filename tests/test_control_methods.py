"""`ipcd.control.methods`: ping, status, methods and shutdown, against a real ipcd over its real socket."""

from __future__ import annotations

import os

from conftest import Ipcd


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


def test_shutdown_method_stops_daemon(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        res = c.call("shutdown")
        assert res["stopping"] is True and res["pid"] == ipcd.proc.pid
    assert ipcd.wait() == 0
    assert not os.path.exists(ipcd.sock)
