"""`ipcd.ctl.errors`: ipcctl's exit codes (1 daemon error, 2 usage, 3 unreachable, 4 permission), from a real
subprocess, each with a message that says what to do and no traceback.
"""

from __future__ import annotations

import json
import socket
import threading

from conftest import Ipcd, ipcctl, ipcctl_in_process, needs_root, run_as


def no_traceback(res) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def test_daemon_error_exits_1(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "call", "no.such.method")
    assert res.returncode == 1
    assert "-32601" in res.stderr and "method not found" in res.stderr
    res = ipcctl("--socket", ipcd.sock, "call", "ping", '{"bogus": 1}')
    assert res.returncode == 1 and "bogus" in res.stderr
    no_traceback(res)


def test_usage_errors_exit_2(ipcd: Ipcd) -> None:
    for args in (["call", "ping", "{not json"], ["call", "ping", "42"], ["ping", "-c", "0"], ["no-such-command"]):
        res = ipcctl("--socket", ipcd.sock, *args)
        assert res.returncode == 2, (args, res.stderr)
        no_traceback(res)


def test_unreachable_no_socket_exits_3(short_tmp) -> None:
    path = str(short_tmp / "none.sock")
    res = ipcctl("--socket", path, "status")
    assert res.returncode == 3
    assert path in res.stderr and "is ipcd running?" in res.stderr and "systemctl start ipcd" in res.stderr
    no_traceback(res)


def test_stale_socket_exits_3(short_tmp) -> None:
    path = str(short_tmp / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    res = ipcctl("--socket", path, "ping")
    assert res.returncode == 3
    assert "stale socket" in res.stderr and "daemon is down" in res.stderr
    no_traceback(res)


def test_timeout_exits_3(short_tmp) -> None:
    path = str(short_tmp / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen()
        accepted = []
        t = threading.Thread(target=lambda: accepted.append(srv.accept()[0]))
        t.start()
        res = ipcctl("--socket", path, "--timeout", "0.3", "status")
        t.join(10)
        for c in accepted:
            c.close()
    assert res.returncode == 3
    assert "no answer" in res.stderr
    no_traceback(res)


@needs_root
def test_socket_permission_denied_exits_4(ipcd: Ipcd) -> None:
    # The control socket is 0600 root: uid 65534 may not connect.
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", ipcd.sock, "status"))
    assert code == 4, out
    assert "permission denied" in out and "join group ipcd" in out and "sudo" in out
    assert "Traceback" not in out


@needs_root
def test_role_refusal_exits_4(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[control]\nsocket_mode = "0666"\n').start()
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "shutdown"))
    assert code == 4, out
    assert "admin" in out
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "--json", "status"))
    assert code == 0, out
    assert json.loads(out)["pid"] == d.proc.pid
    assert d.call("ping")["pong"]  # still running
