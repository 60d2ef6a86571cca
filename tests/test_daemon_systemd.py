"""ipcd/systemd.py against real descriptors and real notify sockets.

`adopt_sockets` reads fds 3.. of the process that calls it, so every
activation case runs in a forked child: the child moves the test's sockets
onto 3, 4, ... (its own copies of pytest's descriptors there are clobbered,
never the parent's), calls `adopt_sockets` with LISTEN_PID set to its own
pid, and sends back what it found as JSON.  The notify tests bind real
datagram sockets, at a path and at an @abstract name, and read what
`Notifier` sends.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipcd.daemon import systemd
from ipcd.daemon.systemd import ActivationError, Notifier, adopt_sockets, socket_path, watchdog_interval_s

HIGH_FD = 200  # where the child parks descriptors while it fills 3..


def in_child(fn: Callable[[], Any]) -> Any:
    """Run `fn` in a forked child and return its JSON-able result (or raise its error text)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            gc.disable()  # a collected object of the parent's must not close fds 3.. under us
            os.close(r)
            w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
            try:
                out: dict[str, Any] = {"ok": fn()}
            except BaseException as e:
                out = {"error": type(e).__name__, "message": str(e), "tb": traceback.format_exc()}
            os.write(w, json.dumps(out).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed before it could answer"
    return json.loads(b"".join(chunks))


def place(fds: list[int]) -> None:
    """In the child: make `fds` the descriptors 3, 4, ... (as systemd passes them)."""
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD) for fd in fds]
    for i, fd in enumerate(parked):
        os.dup2(fd, systemd.SD_LISTEN_FDS_START + i)  # the copy is inheritable, as systemd's are
        os.close(fd)


def describe(socks: dict[str, socket.socket]) -> dict[str, Any]:
    return {
        name: {
            "fd": s.fileno(),
            "type": int(s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)),
            "path": socket_path(s),
            "cloexec": bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
        }
        for name, s in socks.items()
    }


def activate(fds: list[int], names: str | None = None, pid: str | None = None, **extra: str) -> dict[str, Any]:
    """adopt_sockets() in a child that holds `fds` at 3..; also reports the environment after."""

    def child() -> dict[str, Any]:
        place(fds)
        env = {"LISTEN_PID": pid or str(os.getpid()), "LISTEN_FDS": str(len(fds)), **extra}
        if names is not None:
            env["LISTEN_FDNAMES"] = names
        try:
            found = describe(adopt_sockets(env))
        finally:
            left = sorted(k for k in env if k.startswith("LISTEN_"))
            still_open = [fd for fd in range(3, 3 + len(fds)) if _is_open(fd)]
        return {"found": found, "env_left": left, "still_open": still_open}

    return in_child(child)


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
        return True
    except OSError:
        return False


@pytest.fixture
def pair(short_tmp: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listening stream socket (control) and a bound datagram socket (log)."""
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    control.bind(str(short_tmp / "c.sock"))
    control.listen()
    log.bind(str(short_tmp / "l.sock"))
    try:
        yield control, log
    finally:
        control.close()
        log.close()


# -- adopt_sockets ---------------------------------------------------------------


@pytest.mark.parametrize("order", ["control:log", "log:control"])
def test_sockets_picked_by_name_in_either_order(pair, short_tmp: Path, order: str) -> None:
    control, log = pair
    fds = [control.fileno(), log.fileno()] if order == "control:log" else [log.fileno(), control.fileno()]
    res = activate(fds, order)["ok"]
    found = res["found"]
    assert set(found) == {"control", "log"}
    first, second = order.split(":")
    assert found[first]["fd"] == 3 and found[second]["fd"] == 4
    assert found["control"]["type"] == socket.SOCK_STREAM and found["log"]["type"] == socket.SOCK_DGRAM
    assert found["control"]["path"] == str(short_tmp / "c.sock")
    assert found["log"]["path"] == str(short_tmp / "l.sock")
    assert found["control"]["cloexec"] and found["log"]["cloexec"]  # not for ipcd's children
    assert res["env_left"] == []  # LISTEN_PID/FDS/FDNAMES unset


@pytest.mark.parametrize("log_first", [False, True])
def test_without_names_sockets_are_picked_by_type(pair, log_first: bool) -> None:
    control, log = pair
    fds = [log.fileno(), control.fileno()] if log_first else [control.fileno(), log.fileno()]
    found = activate(fds)["ok"]["found"]
    assert found["log"]["fd"] == (3 if log_first else 4)
    assert found["control"]["fd"] == (4 if log_first else 3)


@pytest.mark.parametrize("names", ["unknown:unknown", "ipcd-log.socket:ipcd.socket", ":"])
def test_unknown_names_fall_back_to_type(pair, names: str) -> None:
    # systemd-socket-activate says "unknown"; a unit without FileDescriptorName= gives its own name.
    control, log = pair
    found = activate([log.fileno(), control.fileno()], names)["ok"]["found"]
    assert (found["log"]["fd"], found["control"]["fd"]) == (3, 4)


def test_only_one_socket_passed(pair) -> None:
    control, _ = pair
    found = activate([control.fileno()], "control")["ok"]["found"]
    assert list(found) == ["control"]


def test_other_pid_means_nothing_to_adopt_and_variables_still_unset(pair) -> None:
    control, log = pair
    res = activate([control.fileno(), log.fileno()], "control:log", pid="1")["ok"]
    assert res["found"] == {}
    assert res["env_left"] == []
    assert res["still_open"] == [3, 4]  # not ours: left alone


def test_no_listen_variables_nothing_to_adopt() -> None:
    env: dict[str, str] = {"LISTEN_FDNAMES": "control"}
    assert adopt_sockets(env, pid=os.getpid()) == {}
    assert env == {}


def test_garbage_in_listen_variables_is_an_error() -> None:
    with pytest.raises(ActivationError, match="not numbers"):
        adopt_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"})


def _error(res: dict[str, Any]) -> str:
    assert "error" in res, f"expected an ActivationError, got {res}"
    assert res["error"] == "ActivationError", res["tb"]
    return str(res["message"])


def test_unexpected_extra_named_fd_is_a_clear_error(pair, short_tmp: Path) -> None:
    control, log = pair
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
        extra.bind(str(short_tmp / "x.sock"))
        extra.listen()
        res = activate([control.fileno(), log.fileno(), extra.fileno()], "control:log:metrics")
    msg = _error(res)
    assert "fd 5" in msg and "'metrics'" in msg and "control, log" in msg


def test_unexpected_extra_unnamed_fd_is_a_clear_error(pair, short_tmp: Path) -> None:
    control, log = pair
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
        extra.bind(str(short_tmp / "x.sock"))
        extra.listen()
        res = activate([control.fileno(), log.fileno(), extra.fileno()])
    msg = _error(res)
    assert "two control sockets" in msg and "3" in msg and "5" in msg


def test_error_leaves_the_fds_open(pair) -> None:
    control, log = pair

    def child() -> list[int]:
        place([log.fileno(), control.fileno()])
        with pytest.raises(ActivationError):
            adopt_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:log"})
        return [fd for fd in (3, 4) if _is_open(fd)]

    assert in_child(child)["ok"] == [3, 4]


def test_named_socket_of_the_wrong_type(pair) -> None:
    control, log = pair
    msg = _error(activate([log.fileno(), control.fileno()], "control:log"))
    assert "fd 3 (control)" in msg and "not a stream socket" in msg


def test_names_do_not_match_the_count(pair) -> None:
    control, log = pair
    msg = _error(activate([control.fileno(), log.fileno()], "control"))
    assert "1 names for 2 fds" in msg


def test_not_a_socket(short_tmp: Path) -> None:
    r, w = os.pipe()
    try:
        msg = _error(activate([r], "control"))
    finally:
        os.close(r)
        os.close(w)
    assert "fd 3" in msg and "not a socket" in msg


def test_not_an_af_unix_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        msg = _error(activate([s.fileno()]))
    assert "fd 3" in msg and "not an AF_UNIX socket" in msg


def test_a_seqpacket_socket_is_neither(short_tmp: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.bind(str(short_tmp / "sp.sock"))
        s.listen()
        msg = _error(activate([s.fileno()]))
    assert "neither a stream nor a datagram" in msg


def test_socket_path_of_path_and_abstract_sockets(short_tmp: Path) -> None:
    name = f"ipcd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as p:
        a.bind("\0" + name)
        p.bind(str(short_tmp / "p.sock"))
        assert socket_path(a) == "@" + name
        assert socket_path(p) == str(short_tmp / "p.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound:
        assert socket_path(unbound) == ""


# -- Notifier --------------------------------------------------------------------


class NotifyListener:
    """A real NOTIFY_SOCKET: a datagram socket at a path or an @abstract name."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def recv(self, timeout_s: float = 5.0) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(65536).decode("utf-8")

    def pending(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65536).decode("utf-8"))
        except BlockingIOError:
            return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifyListener]:
    address = str(short_tmp / "notify") if request.param == "path" else f"@ipcd-test-{uuid.uuid4().hex}"
    lst = NotifyListener(address)
    try:
        yield lst
    finally:
        lst.close()


def test_notify_reaches_path_and_abstract_sockets(listener: NotifyListener) -> None:
    errors: list[str] = []
    n = Notifier({"NOTIFY_SOCKET": listener.address}, on_error=errors.append)
    try:
        assert n.enabled
        assert n.ready(status="serving")
        assert listener.recv() == "READY=1\nSTATUS=serving"
        assert n.watchdog()
        assert listener.recv() == "WATCHDOG=1"
        assert n.stopping(status="bye")
        assert listener.recv() == "STOPPING=1\nSTATUS=bye"
        assert n.extend_timeout(2.5)
        assert listener.recv() == "EXTEND_TIMEOUT_USEC=2500000"
        assert n.failed_exit("cannot start: in use", 98)
        assert listener.recv() == "STATUS=cannot start: in use\nERRNO=98"
        assert n.sent == 5 and n.failed == 0 and errors == []
    finally:
        n.close()


def test_status_is_utf8_and_one_line(listener: NotifyListener) -> None:
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    try:
        text = "3 Clients, naïve ✓ Größe – 日本"
        assert n.status(text)
        raw = listener.recv()
        assert raw == f"STATUS={text}"
        assert n.status("two\nlines")
        assert listener.recv() == "STATUS=two lines"  # a newline would start a new KEY=VALUE
    finally:
        n.close()


def test_reloading_carries_monotonic_usec(listener: NotifyListener) -> None:
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    try:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        fields = dict(line.split("=", 1) for line in listener.recv().split("\n"))
        assert fields["RELOADING"] == "1"
        assert before <= int(fields["MONOTONIC_USEC"]) <= after
    finally:
        n.close()


@pytest.mark.parametrize("address", ["/nonexistent/ipcd-notify", "@ipcd-test-nobody-listens"])
def test_failing_notify_socket_is_reported_exactly_once(address: str) -> None:
    errors: list[str] = []
    n = Notifier({"NOTIFY_SOCKET": address}, on_error=errors.append)
    try:
        assert n.enabled
        results = [n.ready(), n.status("x"), n.watchdog(), n.stopping()]
        assert results == [False] * 4
        assert n.failed == 4 and n.sent == 0
        assert len(errors) == 1, errors
        assert f"NOTIFY_SOCKET={address}" in errors[0]
    finally:
        n.close()


def test_notifier_reconnects_when_the_socket_is_replaced(short_tmp: Path) -> None:
    path = str(short_tmp / "notify")
    first = NotifyListener(path)
    errors: list[str] = []
    n = Notifier({"NOTIFY_SOCKET": path}, on_error=errors.append)
    try:
        assert n.status("one")
        assert first.recv() == "STATUS=one"
        first.close()
        os.unlink(path)
        second = NotifyListener(path)  # the manager re-executed and bound again
        try:
            assert n.status("two")
            assert second.recv() == "STATUS=two"
        finally:
            second.close()
        assert errors == []
    finally:
        n.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.sent == 0 and n.failed == 0
    n.close()


# -- watchdog_interval_s -----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{me}"}, 15.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "{other}"}, None),
        ({"WATCHDOG_PID": "{me}"}, None),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    me = os.getpid()
    filled = {k: v.format(me=me, other=me + 1) for k, v in env.items()}
    assert watchdog_interval_s(filled, pid=me) == expected


def test_watchdog_interval_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 0.25
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None


def test_listen_fds_counting_a_closed_fd(pair) -> None:
    control, _ = pair

    def child() -> Any:
        place([control.fileno()])
        if _is_open(4):
            os.close(4)  # the child's copy of one of pytest's descriptors
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
        try:
            adopt_sockets(env)
        except ActivationError as e:
            return {"error": "ActivationError", "message": str(e), "open": _is_open(3)}
        except OSError as e:
            return {"error": type(e).__name__, "message": str(e)}
        return {"error": None}

    res = in_child(child)["ok"]
    assert res["error"] == "ActivationError", res
    assert "fd 4" in res["message"] and "not open" in res["message"] and "LISTEN_FDS=2" in res["message"]
    assert res["open"]  # the one that was passed is left as it was
