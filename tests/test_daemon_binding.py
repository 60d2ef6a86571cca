"""`ipcd.daemon.binding`: socket files with their final mode and group, and the path length at its edge."""

from __future__ import annotations

import os
import stat

from conftest import Ipcd


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
