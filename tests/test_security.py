"""Attacks by a hostile local user, each rerun as found, and held (issue #10, README "Security").

Peers with other uids are forked children that drop to another uid (root only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import time
from collections.abc import Iterator

from conftest import Conn, Ipcd, needs_root, run_as, wait_for

OPEN = '[control]\nsocket_mode = "0666"\n'


@contextlib.contextmanager
def held_connections(sock: str, uid: int, n: int) -> Iterator[int]:
    """`n` connections to `sock` opened and held by a child running as `uid`; yields how many got in."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the attacker
        try:
            os.close(r)
            os.close(go_w)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
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
            os.write(w, str(len(held)).encode())
            os.read(go_r, 1)  # hold them until told
        except BaseException as e:
            os.write(w, f"error {e!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.close(go_r)
    try:
        said = os.read(r, 4096).decode()
        assert said.isdigit(), said
        got = int(said)
        yield got
    finally:
        os.close(go_w)
        os.close(r)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


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
