"""Attacks by a hostile local user, each rerun as found, and held (issue #10, README "Security").

Peers with other uids are forked children that drop to another uid (root only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import time

from conftest import ROOT, Conn, Ipcd, needs_root, run_as, wait_for
from helpers_attack import held_as, vm_kib

OPEN = '[control]\nsocket_mode = "0666"\n'


def held_connections(sock: str, uid: int, n: int) -> contextlib.AbstractContextManager[object]:
    """`n` connections to `sock` opened and held by a child running as `uid`; yields how many got in."""

    def setup() -> list[Conn]:
        held = []
        for _ in range(n):
            c = Conn(sock, 5.0)
            try:
                ok = "pong" in str(c.call("ping"))
            except OSError:  # refused and closed before the ping went out
                ok = False
            if ok:
                held.append(c)
            else:
                c.close()
        return held

    return held_as(uid, setup)


@needs_root
def test_four_users_cannot_lock_root_out(make_ipcd) -> None:
    """#10 item 9: 4 x 64 connections filled max_connections = 256, and root could not connect."""
    d: Ipcd = make_ipcd(OPEN + "max_connections = 256\nmax_connections_per_uid = 64\n").start()
    with contextlib.ExitStack() as stack:
        got = [stack.enter_context(held_connections(d.sock, uid, 64)) for uid in (2001, 2002, 2003, 2004)]
        # Together they fill the total (the readiness check's own connection may still be counted
        # for a moment, taking one place from the last of them).
        assert got[:3] == [64, 64, 64] and got[3] in (63, 64)
        with held_connections(d.sock, 2005, 1) as fifth:
            assert fifth == 0  # another user is refused: the total is reached
        # Root takes one of the slots reserved for admins, and can act.
        with Conn(d.sock) as root:
            st = root.call("status")
            assert st["connections"]["active"] == 257
            assert root.call("clients")["clients"]
    wait_for(lambda: d.call("status")["connections"]["active"] == 1, 10, "the held connections to close")


@needs_root
def test_admin_reserved_slots_are_for_admins_only(make_ipcd) -> None:
    cfg = OPEN + "max_connections = 4\nmax_connections_per_uid = 10\nadmin_reserved_connections = 2\n"
    d: Ipcd = make_ipcd(cfg).start()
    with held_connections(d.sock, 2001, 6) as got:
        assert got == 4  # the user gets max_connections, not the reserved ones
        admins = [Conn(d.sock) for _ in range(3)]
        try:
            assert [a.call("ping").get("pong") for a in admins[:2]] == [True, True]
            err = admins[2].recv_json()["error"]  # the reserve is used up too
            assert err["code"] == -32002 and err["data"]["limit"] == "max_connections"
        finally:
            for a in admins:
                a.close()
    assert d.stop(signal.SIGTERM) == 0


def send_as(uid: int, path: str, datagrams: list[bytes]) -> None:
    """Datagrams to the log socket from a child running as `uid` (blocking, as syslog(3))."""

    def child() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, path)
        return 0, ""

    code, out = run_as(uid, uid, child)
    assert code == 0, out


@needs_root
def test_one_user_cannot_erase_another_users_logs(make_ipcd) -> None:
    """#10 item 6: 4000 "<10>" datagrams in a blink left only the attacker's entries (max_entries 3000)."""
    d: Ipcd = make_ipcd(OPEN + "[store]\nmax_entries = 3000\nretention_interval_s = 0.05\n").start()
    send_as(3002, d.log_sock, [b"<14>victim: entry %d" % i for i in range(50)])
    wait_for(lambda: d.call("status")["logs"]["stored"] == 50, 10, "the victim's entries")
    send_as(3001, d.log_sock, [b"<10>attacker: flood %d" % i for i in range(4000)])
    wait_for(lambda: d.call("status")["logs"]["stored"] == 4050, 20, "the flood to be stored")
    wait_for(lambda: d.call("status")["store"]["entries"] <= 3000, 10, "retention")
    victim = d.call("logs.query", {"uid": 3002, "limit": 100})["entries"]
    assert [e["message"] for e in victim] == [f"entry {i}" for i in range(50)]
    flood = d.call("logs.query", {"uid": 3001, "limit": 1})["entries"]
    assert flood[0]["message"] == "flood 3999"  # the attacker lost its own oldest


# -- trust in directories and files (#10 items 2 and 3, the daemon's side) -------------------


def test_store_files_are_0600_and_the_state_dir_0700_whatever_the_umask(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    old = os.umask(0)
    try:
        d.start()
    finally:
        os.umask(old)
    d.call("kv.set", {"key": "k", "value": 1})
    d.call("ping")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.state_dir.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes  # ipcd.db(-wal, -shm), kv.db(...)
    assert {"ipcd.db", "kv.db"} <= set(modes)
    assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(d.run_dir.stat().st_mode) == 0o755  # others must reach the sockets


def test_a_symlinked_runtime_dir_is_refused(make_ipcd, short_tmp) -> None:
    d: Ipcd = make_ipcd()
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    d.run_dir.symlink_to(elsewhere)
    d.start(wait=False)
    assert d.wait() == 1
    assert f"{d.run_dir} is a symlink: refusing to use it" in d.stderr()
    assert not any(elsewhere.iterdir())  # nothing was made through it


def test_a_world_writable_state_dir_is_refused(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.state_dir.mkdir()
    os.chmod(d.state_dir, 0o777)
    d.start(wait=False)
    assert d.wait() == 1
    assert "is writable by its group or by others (mode 0777)" in d.stderr() and "chmod go-w" in d.stderr()


@needs_root
def test_a_runtime_dir_made_by_another_user_is_refused(make_ipcd) -> None:
    """/tmp/ipcd-$UID made first by bob: alice's ipcd refuses it (and alice's ipcctl too, see test_trust)."""
    d: Ipcd = make_ipcd()
    d.run_dir.mkdir()
    os.chown(d.run_dir, 3003, 3003)
    d.start(wait=False)
    assert d.wait() == 1
    assert f"{d.run_dir} is owned by uid 3003" in d.stderr()


@needs_root
def test_a_store_file_another_uid_made_is_refused(make_ipcd) -> None:
    """A root ipcd used bob's pre-made ipcd.db in a world-writable state dir."""
    d: Ipcd = make_ipcd()
    d.state_dir.mkdir(mode=0o700)
    planted = d.state_dir / "ipcd.db"
    planted.write_bytes(b"")
    os.chown(planted, 3003, 3003)
    d.start(wait=False)
    assert d.wait() == 1
    assert f"{planted} is owned by uid 3003, not by uid 0" in d.stderr()


def test_sigterm_while_a_kv_set_is_in_flight_answers_it_and_stops_at_once(make_ipcd) -> None:
    """#10 item 13: the stop took 30 s (the write waited for a writer that had ended)."""
    d: Ipcd = make_ipcd().start()
    with Conn(d.sock) as c:
        big = "x" * 500_000
        for i in range(20):  # pipelined: some are still in flight when SIGTERM lands
            c.send_json({"jsonrpc": "2.0", "id": i, "method": "kv.set", "params": {"key": f"k{i}", "value": big}})
        d.send_signal(signal.SIGTERM)
        replies = []
        while (line := c.readline()) != b"":
            replies.append(json.loads(line))
    t0 = time.monotonic()
    assert d.wait(20) == 0
    assert time.monotonic() - t0 < 10
    acked = [r["id"] for r in replies if "result" in r]
    assert acked == list(range(len(acked)))  # answered in order, up to where the stop cut reading
    d.start()
    for i in acked:  # what was acknowledged was committed
        assert d.call("kv.get", {"key": f"k{i}"})["version"] == 1


def test_the_system_unit_keeps_the_store_from_the_socket_group() -> None:
    """#10 item 2: the unit had StateDirectoryMode=0750 UMask=0027, and group ipcd could copy ipcd.db."""
    for unit in (ROOT / "systemd/ipcd.service", ROOT / "ipcd/unitfiles/ipcd.service"):
        lines = unit.read_text().splitlines()
        assert "StateDirectoryMode=0700" in lines and "UMask=0077" in lines, unit


# -- kv (#10 items 4 and 11) ---------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_one_kv_value_never_stops_a_restart(make_ipcd) -> None:
    """#10 item 4: a list nested 983 deep was taken by kv.set, and json.loads at start made ipcd exit 1 forever."""
    d: Ipcd = make_ipcd().start()
    # 64 levels in all: the request object, its params, and the value's 62.
    assert d.call("kv.set", {"key": "ok", "value": json.loads(nested(62))})["version"] == 1
    with d.conn() as c:
        for depth in (63, 983):  # sent as text: the test's own json would recurse as deep
            c.send(
                b'{"jsonrpc":"2.0","id":1,"method":"kv.set","params":{"key":"deep","value":%s}}\n'
                % nested(depth).encode()
            )
            err = c.recv_json()["error"]
            assert err["code"] == -32700 and "nested more than 64 deep" in err["message"], err
    assert d.stop() == 0
    # A kv.db written before the cap (or by hand) may hold such a row: it is skipped and reported.
    with contextlib.closing(sqlite3.connect(d.state_dir / "kv.db")) as db, db:
        db.execute("UPDATE kv SET value = ? WHERE key = 'ok'", (nested(983),))
        db.execute(
            "INSERT INTO kv (key, value, version, set_at) VALUES ('fine', '{\"a\": 1}', 1, 0), ('torn', '[1, ', 1, 0)"
        )
    d.start()
    assert d.call("kv.get", {"key": "fine"})["value"] == {"a": 1}
    assert d.call("kv.get", {"key": "ok"})["code"] == -32003
    assert d.call("kv.get", {"key": "torn"})["code"] == -32003
    err = d.stderr()
    assert "'ok'" in err and "nested" in err and "'torn'" in err
    assert d.stop() == 0


def test_kv_max_bytes_at_its_edge_and_values_cost_their_size(make_ipcd) -> None:
    """#10 item 11: values were kept as Python objects, ~24 times their size (540 MB again after a restart)."""
    value = [{}] * 666_666  # "[{},{},...]": 2 MB of JSON, about 48 MB as Python dicts
    size = len(json.dumps(value, separators=(",", ":")))
    cfg = f"[control]\nmax_request_bytes = 4194304\n[kv]\nmax_value_bytes = {size}\nmax_bytes = {20 * size}\n"
    d: Ipcd = make_ipcd(cfg).start()
    with d.conn(30) as c:
        for i in range(20):
            assert c.call("kv.set", {"key": f"v{i}", "value": value})["version"] == 1
        err = c.call("kv.set", {"key": "one-more", "value": 1})
        assert err["code"] == -32002 and err["data"] == {"limit": "max_bytes", "value": 20 * size}
        assert c.call("kv.set", {"key": "v0", "value": 1})["version"] == 2  # room for size - 1 bytes
        err = c.call("kv.set", {"key": "one-more", "value": "x" * (size - 2)})  # size bytes: one too many
        assert err["code"] == -32002 and err["data"]["limit"] == "max_bytes"
        assert c.call("kv.set", {"key": "one-more", "value": "x" * (size - 3)})["version"] == 1  # the edge
        assert c.call("status")["kv"]["bytes"] == 20 * size
    assert d.stop() == 0
    d.start()
    assert d.proc is not None
    rss_kib = vm_kib(d.proc.pid)
    assert rss_kib < 3 * 20 * size // 1024 + 64 * 1024, f"{rss_kib} KiB after loading {20 * size} bytes of values"
    assert d.call("status")["kv"]["bytes"] == 20 * size


# -- what one connection can make ipcd hold (#10 items 5, 10, 11) ------------------------------------


def test_pipelined_requests_from_a_peer_that_never_reads_cost_little(make_ipcd) -> None:
    """#10 item 5: 64 KiB of "methods\\n" (8192 calls) made ipcd build 106 MB of replies first."""
    d: Ipcd = make_ipcd().start()
    assert d.proc is not None
    with d.conn() as me:
        me.call("ping")
        before = vm_kib(d.proc.pid, "VmHWM")
        for _ in range(4):
            with Conn(d.sock) as attacker:
                attacker.send(b"methods\n" * 8192)  # and closes without reading a byte
        wait_for(lambda: me.call("status")["connections"]["active"] == 1, 20, "the four to be gone")
        grown = vm_kib(d.proc.pid, "VmHWM") - before
        assert grown < 32 * 1024, f"the peak grew by {grown} KiB"
        assert me.call("ping")["pong"]


def test_a_plain_command_line_of_a_mebibyte_is_read_in_linear_time(make_ipcd) -> None:
    """A plain command (for socat) as long as a request line may be: answered within the connection's
    deadline of 10 s, where splitting it the way shlex does would take about 18 s."""
    d: Ipcd = make_ipcd().start()
    word = "x" * 1_000_000  # a string of 1,000,002 bytes as JSON: under max_value_bytes (1 MiB)
    with d.conn() as c:
        c.send(b"kv.set big " + word.encode() + b"\n")
        assert c.recv_json()["result"]["version"] == 1
        c.send(b"kv.set big '" + word.encode() + b"' x\n")  # one word too many: the error, as fast
        assert c.recv_json()["error"]["code"] == -32602
        assert c.call("kv.get", {"key": "big"})["value"] == word
        c.send(b"kv.set" + b" a" * 500_000 + b"\n")  # each word would be tried as JSON: refused first
        err = c.recv_json()["error"]
        assert err["code"] == -32700 and "at most 1024 arguments" in err["message"], err


def test_a_connections_channels_count_as_streams(make_ipcd) -> None:
    """#10 item 10: 300k channels on one connection added 160 MB; kv.watch and follows were capped, channels not."""
    d: Ipcd = make_ipcd("[control]\nmax_streams_per_connection = 5\n").start()
    with d.conn() as c:
        assert c.call("subscribe", {"channels": ["a", "b", "c"]}) == {"channels": ["a", "b", "c"]}
        assert c.call("kv.watch", {"prefix": "x"}) == {"watching": "x"}
        err = c.call("subscribe", {"channels": ["d", "e"]})  # 3 + 1 + 2 > 5
        assert err["code"] == -32002 and err["data"] == {"limit": "max_streams_per_connection", "value": 5}
        assert c.call("subscribe", {"channels": ["a", "d"]}) == {"channels": ["a", "b", "c", "d"]}  # 5: the edge
        err = c.call("logs.follow")
        assert err["code"] == -32002 and err["data"]["limit"] == "max_streams_per_connection"
        assert c.call("unsubscribe", {"channels": ["a", "b"]}) == {"channels": ["a", "b"]}
        assert c.call("logs.follow")["following"]  # 2 channels + kv.watch + the follow
        assert c.call("subscribe", {"channels": ["z" * 256]})["channels"][-1] == "z" * 256
        err = c.call("subscribe", {"channels": [f"n{i}" for i in range(100_000)]})
        assert err["code"] == -32002
        assert d.call("status")["channels"]["channels"] == 3
