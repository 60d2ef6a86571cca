"""Who may do what: roles from SO_PEERCRED/SO_PEERGROUPS, per-uid visibility and caps.

Peers with other uids are forked children that drop to uid 65534 (root only).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any

from conftest import Conn, Ipcd, ipcctl_in_process, needs_root, run_as, wait_for

NOBODY = 65534
OPEN = '[control]\nsocket_mode = "0666"\n'


def calls_as(sock: str, calls: list[tuple[str, Any]], uid: int = NOBODY, groups: tuple[int, ...] = ()) -> list[Any]:
    """Results (or error objects) of `calls`, made on ONE connection by another uid."""

    def child() -> tuple[int, str]:
        with Conn(sock) as c:
            return 0, json.dumps([c.call(m, p) for m, p in calls])

    code, out = run_as(uid, NOBODY, child, groups)
    assert code == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


@needs_root
def test_read_role_refused_admin_method_and_connection_lives_on(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN).start()
    pong, refused, again = calls_as(d.sock, [("ping", None), ("shutdown", None), ("ping", None)])
    assert pong["pong"] is True
    assert refused["code"] == -32001 and refused["data"]["required_role"] == "admin"
    assert "admin" in refused["message"]
    assert again["pong"] is True
    assert d.call("ping")["pong"]  # not stopped


@needs_root
def test_write_role_by_uid_and_by_supplementary_group(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN).start()
    (denied,) = calls_as(d.sock, [("kv.set", {"key": "k", "value": 1})])
    assert denied["code"] == -32001 and denied["data"]["required_role"] == "write"
    d.stop()
    d.config.write_text(OPEN + f"[access]\nwrite_uids = [{NOBODY}]\n")
    d.start()
    (ok,) = calls_as(d.sock, [("kv.set", {"key": "k", "value": 1})])
    assert ok["version"] >= 1
    d.stop()
    d.config.write_text(OPEN + "[access]\nwrite_groups = [4242]\n")  # a group only the child has
    d.start()
    (ok,) = calls_as(d.sock, [("kv.set", {"key": "k2", "value": 2})], groups=(4242,))
    assert ok["version"] == 1
    (denied,) = calls_as(d.sock, [("kv.set", {"key": "k3", "value": 3})])
    assert denied["code"] == -32001


@needs_root
def test_admin_by_uid_and_by_group(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN + "[access]\nadmin_groups = [4343]\n").start()
    (rows,) = calls_as(d.sock, [("clients", None)], groups=(4343,))
    assert any(r["uid"] == NOBODY and r["role"] == "admin" for r in rows["clients"])
    (denied,) = calls_as(d.sock, [("clients", None)])
    assert denied["code"] == -32001


@needs_root
def test_clients_lists_live_connections(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN).start()
    with d.conn() as me:
        for _ in range(3):
            me.call("ping")
        rows = me.call("clients")["clients"]
    mine = [r for r in rows if r["self"]]
    assert len(mine) == 1
    r = mine[0]
    assert r["pid"] == os.getpid() and r["uid"] == 0 and r["role"] == "admin"
    assert r["requests"] == 4  # three pings and this call
    assert r["command"] and r["connected_at"] > 0


@needs_root
def test_non_admin_sees_only_its_own_log_entries(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN).start()

    def send_as_nobody() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>Nov 27 10:00:00 mine: from nobody", d.log_sock)
        return 0, ""

    assert run_as(NOBODY, NOBODY, send_as_nobody)[0] == 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>Nov 27 10:00:00 root-app: from root", d.log_sock)
    wait_for(lambda: d.call("status")["logs"]["stored"] == 2, 10, "both entries stored")
    own, other = calls_as(d.sock, [("logs.query", {}), ("logs.query", {"uid": 0})])
    assert [e["message"] for e in own["entries"]] == ["from nobody"]
    assert own["entries"][0]["sender_uid"] == NOBODY
    assert other["code"] == -32001
    everything = d.call("logs.query", {})["entries"]  # root is admin: sees both
    assert sorted(e["sender_uid"] for e in everything) == [0, NOBODY]


@needs_root
def test_non_admin_follow_is_filtered_too(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN).start()

    def follow() -> tuple[int, str]:
        with Conn(d.sock) as c:
            assert c.call("logs.follow", {})["following"]
            # Tell the parent we follow, by a log line of our own, then read.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"<13>mine: ready", d.log_sock)
            seen = []
            while len(seen) < 2:
                note = c.recv_json()
                seen.append(note["params"]["message"])
            return 0, json.dumps(seen)

    import threading

    result: list[tuple[int, str]] = []
    t = threading.Thread(target=lambda: result.append(run_as(NOBODY, NOBODY, follow)))
    t.start()
    wait_for(lambda: d.call("status")["logs"]["stored"] >= 1, 10, "the follower's ready line")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>root-app: secret", d.log_sock)  # not for the follower's eyes

    def second() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s2:
            s2.sendto(b"<13>mine: second", d.log_sock)
        return 0, ""

    run_as(NOBODY, NOBODY, second)
    t.join(30)
    code, out = result[0]
    assert code == 0, out
    assert json.loads(out) == ["ready", "second"]


@needs_root
def test_per_uid_connection_cap_at_edge(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN + "max_connections_per_uid = 2\n").start()

    def three() -> tuple[int, str]:
        conns = [Conn(d.sock) for _ in range(3)]
        try:
            first_two = [c.call("ping")["pong"] for c in conns[:2]]
            refused = conns[2].recv_json()["error"]
            return 0, json.dumps([first_two, refused, conns[2].at_eof()])
        finally:
            for c in conns:
                c.close()

    code, out = run_as(NOBODY, NOBODY, three)
    assert code == 0, out
    first_two, refused, eof = json.loads(out)
    assert first_two == [True, True]
    assert refused["code"] == -32002 and refused["data"]["limit"] == "max_connections_per_uid"
    assert eof is True
    # Admins (root here) are not held to the per-uid cap.
    held = [d.conn() for _ in range(5)]
    try:
        assert all(c.call("ping")["pong"] for c in held)
    finally:
        for c in held:
            c.close()


def test_log_socket_mode_default_and_configured(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    assert stat.S_IMODE(os.lstat(d.log_sock).st_mode) == 0o666
    d.stop()
    d.config.write_text('[log]\nsocket_mode = "0620"\n')
    d.start()
    assert stat.S_IMODE(os.lstat(d.log_sock).st_mode) == 0o620


@needs_root
def test_closed_log_socket_refuses_other_users_with_exit_4(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[log]\nsocket_mode = "0600"\n').start()
    code, out = run_as(NOBODY, NOBODY, lambda: ipcctl_in_process("send", "--log-socket", d.log_sock, "hi"))
    assert code == 4, out
    assert "permission denied" in out


@needs_root
def test_reload_changes_access(make_ipcd) -> None:
    d: Ipcd = make_ipcd(OPEN).start()
    (denied,) = calls_as(d.sock, [("kv.set", {"key": "r", "value": 1})])
    assert denied["code"] == -32001
    d.config.write_text(OPEN + f"[access]\nwrite_uids = [{NOBODY}]\n")
    assert d.call("reload")["reloaded"] is True
    (ok,) = calls_as(d.sock, [("kv.set", {"key": "r", "value": 1})])
    assert ok["version"] == 1
