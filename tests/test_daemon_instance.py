"""ipcd's lifecycle: single instance, stale sockets, modes, limits, signals, config errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from conftest import Conn, Ipcd, wait_for, wait_only_connection


def test_version_everywhere() -> None:
    from conftest import BIN

    from ipcd import __version__

    for argv in (
        [str(BIN / "ipcd"), "--version"],
        [str(BIN / "ipcctl"), "--version"],
        [sys.executable, "-m", "ipcd", "--version"],
    ):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        assert __version__ in out, argv


def test_second_instance_refused_naming_pid(make_ipcd) -> None:
    first: Ipcd = make_ipcd().start()
    second = Ipcd(first.root, "")
    second.stderr_path = first.root / "second.stderr"
    second.start(wait=False)
    assert second.wait() == 1
    err = second.stderr()
    assert f"pid {first.proc.pid}" in err and "already running" in err
    assert first.call("ping")["pong"]  # the first one is untouched
    assert os.path.exists(first.sock)


def test_two_daemons_starting_at_once_one_wins(make_ipcd) -> None:
    a: Ipcd = make_ipcd()
    b = Ipcd(a.root, "")
    b.stderr_path = a.root / "b.stderr"
    a.start(wait=False)
    b.start(wait=False)
    # Exactly one exits 1; the other serves.
    loser = wait_for(lambda: next((d for d in (a, b) if d.proc.poll() is not None), None), 20, "one daemon to give up")
    winner = b if loser is a else a
    assert loser.proc.returncode == 1, loser.stderr()
    assert "already running" in loser.stderr()
    winner.wait_ready()
    assert winner.call("status")["pid"] == winner.proc.pid
    b.kill()


def test_stale_socket_is_replaced(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.run_dir.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.sock)
    s.close()  # the file stays, nothing listens: a crashed daemon's leftover
    assert stat.S_ISSOCK(os.lstat(d.sock).st_mode)
    d.start()
    assert d.call("ping")["pong"]
    assert "stale" in d.stderr()


def test_live_foreign_listener_is_not_replaced(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.run_dir.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(d.sock)
        s.listen()
        d.start(wait=False)
        assert d.wait() == 1
        st = os.lstat(d.sock)
    assert "already running" in d.stderr()
    assert stat.S_ISSOCK(st.st_mode)


def test_regular_file_in_the_way_is_an_error(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.run_dir.mkdir(parents=True)
    with open(d.sock, "w") as f:
        f.write("not a socket")
    d.start(wait=False)
    assert d.wait() == 1
    assert "not a socket" in d.stderr()
    with open(d.sock) as f:
        assert f.read() == "not a socket"


def test_socket_path_too_long(short_tmp) -> None:
    deep = short_tmp / ("x" * 100)
    d = Ipcd(short_tmp, "")
    d.run_dir = deep
    d.start(wait=False)
    assert d.wait() == 1
    err = d.stderr()
    assert "107" in err and "ipcd.sock" in err


def test_socket_path_of_exactly_107_bytes_works(short_tmp) -> None:
    base = str(short_tmp) + "/"
    name_len = 107 - len(base) - len("/ipcd.sock")
    d = Ipcd(short_tmp, "")
    d.run_dir = short_tmp / ("r" * name_len)
    assert len(d.sock.encode()) == 107
    d.start()
    assert d.call("ping")["pong"]
    assert d.stop() == 0


def test_control_socket_mode_without_group_is_0600(ipcd: Ipcd) -> None:
    st = os.lstat(ipcd.sock)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert "does not exist" in ipcd.stderr() and "groupadd" in ipcd.stderr()


def test_control_socket_mode_and_group_from_config(make_ipcd) -> None:
    import grp

    group = (
        grp.getgrnam("nogroup") if any(g.gr_name == "nogroup" for g in grp.getgrall()) else grp.getgrgid(os.getgid())
    )
    d: Ipcd = make_ipcd(f'[control]\nsocket_group = "{group.gr_name}"\nsocket_mode = "0660"\n').start()
    st = os.lstat(d.sock)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == group.gr_gid


def test_explicit_mode_kept_when_group_missing(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[control]\nsocket_group = "no-such-group-x"\nsocket_mode = "0640"\n').start()
    assert stat.S_IMODE(os.lstat(d.sock).st_mode) == 0o640


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(ipcd: Ipcd, sig: int) -> None:
    idle = ipcd.conn()  # a long-lived client must not hold up the stop
    try:
        assert idle.call("ping")["pong"]
        assert ipcd.stop(sig) == 0
        assert idle.at_eof()
    finally:
        idle.close()
    assert not os.path.exists(ipcd.sock)
    assert "stopped" in ipcd.stderr()


def test_stop_answers_requests_already_sent(ipcd: Ipcd) -> None:
    n = 2000
    with ipcd.conn(30.0) as c:
        c.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}).encode() + b"\n" for i in range(n)))
        ipcd.send_signal(signal.SIGTERM)
        got = []
        while line := c.readline():
            got.append(json.loads(line)["id"])
    assert got == list(range(n))
    assert ipcd.wait() == 0


def test_config_error_exits_78_naming_file_line_key(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[control]\nmax_connections = 10\nidle_timeout_s = "soon"\n')
    d.start(wait=False)
    assert d.wait() == 78
    err = d.stderr()
    assert f"{d.config}:3:" in err and "control.idle_timeout_s" in err


def test_missing_named_config_is_an_error(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.config.unlink()
    d.start(wait=False)
    assert d.wait() == 78
    assert "no such file" in d.stderr()


def test_check_config_prints_effective_settings(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nmax_connections = 9\n")
    out = subprocess.run(d.argv("--check-config"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["control"]["max_connections"] == 9
    assert doc["control"]["socket_mode"] == "0660"
    assert doc["runtime_dir"] == str(d.run_dir)


# -- limits, each at its edge ---------------------------------------------------


def _padded_request(total: int) -> bytes:
    head = b'{"jsonrpc":"2.0","id":1,"method":"ping"'
    return head + b" " * (total - len(head) - 1) + b"}"


def test_request_line_limit_at_edge(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nmax_request_bytes = 1024\n").start()
    with d.conn() as c:
        line = _padded_request(1024)
        assert len(line) == 1024
        c.send(line + b"\n")
        assert c.recv_json()["result"]["pong"]
    with d.conn() as c:
        c.send(_padded_request(1025) + b"\n")
        err = c.recv_json()["error"]
        assert err["code"] == -32002 and err["data"]["limit"] == "max_request_bytes"
        assert c.at_eof()
    with d.conn() as c:  # no newline at all: cut off as soon as it is over
        c.send(b"x" * 1025)
        assert c.recv_json()["error"]["code"] == -32002
        assert c.at_eof()
    assert d.call("ping")["pong"]


def test_idle_timeout(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nidle_timeout_s = 0.3\n").start()
    with d.conn() as quiet, d.conn() as busy:
        t0 = time.monotonic()
        deadline = t0 + 1.0
        while time.monotonic() < deadline:  # keeps talking for longer than the timeout
            assert busy.call("ping")["pong"]
        err = quiet.recv_json()["error"]
        assert err["code"] == -32002 and err["data"]["limit"] == "idle_timeout_s"
        assert quiet.at_eof()
        assert busy.call("ping")["pong"]


def test_half_line_counts_as_idle(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nidle_timeout_s = 0.2\n").start()
    with d.conn() as c:
        c.send(b'{"jsonrpc":"2.0",')
        assert c.recv_json()["error"]["data"]["limit"] == "idle_timeout_s"
        assert c.at_eof()


def test_connection_limit_at_edge(make_ipcd) -> None:
    # No slots reserved for admins: the suite may run as root, an admin.
    d: Ipcd = make_ipcd("[control]\nmax_connections = 3\nadmin_reserved_connections = 0\n").start()
    held = [d.conn()]
    try:
        wait_only_connection(held[0], "the readiness check's connection to be gone")
        held += [d.conn(), d.conn()]
        for c in held:
            assert c.call("ping")["pong"]  # exactly max_connections are served
        with Conn(d.sock) as extra:
            err = extra.recv_json()["error"]
            assert err["code"] == -32002 and err["data"]["limit"] == "max_connections"
            assert extra.at_eof()
        held.pop().close()
        wait_for(lambda: held[0].call("status")["connections"]["active"] == 2, 10, "a slot to free up")
        with Conn(d.sock) as again:
            assert again.call("ping")["pong"]
    finally:
        for c in held:
            c.close()
