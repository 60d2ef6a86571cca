"""`ipcd.daemon.instance`: one ipcd per runtime dir; a live one is refused, a stale socket replaced."""

from __future__ import annotations

import os
import socket
import stat

from conftest import Ipcd, wait_for


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
