"""The systemd contract end to end, without systemd: activation and notify.

Activation: the test binds the sockets itself and starts `ipcd` with them as
fds 3.. through a shell wrapper that moves them into place and sets
LISTEN_PID to its own pid before it execs ipcd (so LISTEN_PID is ipcd's, as
sd_listen_fds(3) requires); or through systemd-socket-activate, chained
because one invocation cannot mix stream and datagram sockets.

Notify: a real datagram socket, at a path and at an @abstract name, is
ipcd's NOTIFY_SOCKET; `Notes` records every message with its arrival time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Conn, Ipcd, ipcctl, needs_program, wait_for

# bash, not dash: dash cannot redirect descriptors above 9, and the test's sockets
# sit wherever pytest left room.  `n<&fd` is dup2(fd, n): the sockets land on 3, 4, ...
ACTIVATE = (
    'n=3; for fd in $IPCD_TEST_FDS; do eval "exec $n<&$fd $fd<&-"; n=$((n + 1)); done; '
    "unset IPCD_TEST_FDS; "
    'LISTEN_PID=$$ LISTEN_FDS=$((n - 3)) exec "$@"'
)


class Activated(Ipcd):
    """An ipcd whose control socket may be one the test bound and passed in."""

    control_path: str | None = None

    @property
    def sock(self) -> str:
        return self.control_path or str(self.run_dir / "ipcd.sock")


def bound(path: Path, kind: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(str(path))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return s


def start_activated(
    d: Activated,
    socks: list[socket.socket],
    names: str | None = None,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> Activated:
    """Start `d` with `socks` as its fds 3.. (LISTEN_FDNAMES=`names`), then close our copies."""
    # Out of the way of 3..5 first, so that moving one cannot overwrite another.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 10) for s in socks]
    full_env = {**d.env, "IPCD_TEST_FDS": " ".join(map(str, high)), **(env or {})}
    if names is not None:
        full_env["LISTEN_FDNAMES"] = names
    try:
        with open(d.stderr_path, "ab") as err:
            d.proc = subprocess.Popen(
                ["bash", "-c", ACTIVATE, "ipcd-activate", *d.argv()],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=full_env,
                pass_fds=high,
            )
    finally:
        for fd in high:
            os.close(fd)
        for s in socks:
            s.close()  # from now on ipcd holds the only copies, as with systemd's
    if wait:
        d.wait_ready()
    return d


@pytest.fixture
def make_activated(make_ipcd: Callable[..., Ipcd]) -> Callable[..., Activated]:
    def make(config: str = "", name: str = "d", env: dict[str, str] | None = None) -> Activated:
        d = make_ipcd(config, name, env)
        d.__class__ = Activated  # the fixture still kills it at the end
        sd = d.root / "sd"  # where "systemd" binds: not ipcd's --runtime-dir
        sd.mkdir()
        return d  # type: ignore[return-value]

    return make


def sd_paths(d: Ipcd) -> tuple[Path, Path]:
    return d.root / "sd" / "control.sock", d.root / "sd" / "log.sock"


def send_log(path: str | Path, text: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(f"<13>{text}".encode(), str(path))


def stored(d: Ipcd, text: str) -> bool:
    return bool(d.call("logs.query", {"grep": text})["entries"])


def assert_is_socket(path: Path) -> None:
    assert stat.S_ISSOCK(os.lstat(path).st_mode), f"{path} is not a socket file"


# -- activation ------------------------------------------------------------------


@pytest.mark.parametrize("names", ["control:log", "log:control", None])
def test_adopts_both_sockets(make_activated, names: str | None) -> None:
    d = make_activated()
    cpath, lpath = sd_paths(d)
    control, log = bound(cpath, socket.SOCK_STREAM), bound(lpath, socket.SOCK_DGRAM)
    d.control_path = str(cpath)
    order = [log, control] if names == "log:control" else [control, log]
    start_activated(d, order, names)
    st = d.call("status")
    assert st["activation"] == "systemd"
    assert st["sockets"] == {"control": str(cpath), "log": str(lpath)}
    send_log(lpath, "through the adopted log socket")
    wait_for(lambda: stored(d, "adopted log socket"), 10, "the datagram to be stored")
    # ipcd bound nothing itself: no socket files and no lock in its runtime dir.
    assert not any(d.run_dir.glob("*.sock")) and not (d.run_dir / "ipcd.lock").exists()
    assert d.stop() == 0
    # systemd owns these paths: ipcd must not have unlinked them.
    assert_is_socket(cpath)
    assert_is_socket(lpath)


def test_without_names_either_order(make_activated) -> None:
    d = make_activated()
    cpath, lpath = sd_paths(d)
    d.control_path = str(cpath)
    start_activated(d, [bound(lpath, socket.SOCK_DGRAM), bound(cpath, socket.SOCK_STREAM)])
    assert d.call("status")["sockets"] == {"control": str(cpath), "log": str(lpath)}
    assert d.stop() == 0


def test_only_control_passed_log_bound_in_runtime_dir(make_activated) -> None:
    d = make_activated()
    cpath, _ = sd_paths(d)
    d.control_path = str(cpath)
    start_activated(d, [bound(cpath, socket.SOCK_STREAM)], "control")
    st = d.call("status")
    assert st["activation"] == "systemd"
    assert st["sockets"] == {"control": str(cpath), "log": d.log_sock}
    assert stat.S_IMODE(os.lstat(d.log_sock).st_mode) == 0o666
    send_log(d.log_sock, "self-bound beside an adopted one")
    wait_for(lambda: stored(d, "self-bound beside"), 10, "the datagram to be stored")
    assert d.stop() == 0
    assert_is_socket(cpath)  # systemd's
    assert not os.path.exists(d.log_sock)  # ipcd's own: removed


def test_only_log_passed_control_bound_in_runtime_dir(make_activated) -> None:
    d = make_activated()
    _, lpath = sd_paths(d)
    start_activated(d, [bound(lpath, socket.SOCK_DGRAM)], "log")  # control_path None: run_dir/ipcd.sock
    st = d.call("status")
    assert st["activation"] == "systemd"
    assert st["sockets"] == {"control": d.sock, "log": str(lpath)}
    assert d.stop() == 0
    assert_is_socket(lpath)
    assert not os.path.exists(d.sock)


def test_self_bound_activation_is_self(ipcd: Ipcd) -> None:
    assert ipcd.call("status")["activation"] == "self"


def _start_fails(d: Activated, socks: list[socket.socket], names: str | None, notes: Notes | None = None) -> str:
    env = {"NOTIFY_SOCKET": notes.address} if notes else None
    start_activated(d, socks, names, wait=False, env=env)
    assert d.wait() == 1, d.stderr()
    err = d.stderr()
    assert "Traceback" not in err
    return err


def test_unexpected_extra_fd_is_a_clear_error(make_activated, notes: Notes) -> None:
    d = make_activated()
    cpath, lpath = sd_paths(d)
    socks = [
        bound(cpath, socket.SOCK_STREAM),
        bound(lpath, socket.SOCK_DGRAM),
        bound(d.root / "sd" / "x.sock", socket.SOCK_STREAM),
    ]
    err = _start_fails(d, socks, "control:log:metrics", notes)
    assert "socket activation" in err and "fd 5" in err and "'metrics'" in err
    msg = notes.wait(lambda f: "ERRNO" in f, 10, "STATUS= and ERRNO= of the failed start")
    assert "'metrics'" in msg["STATUS"] and msg["ERRNO"] == str(errno.EINVAL)
    assert not any("READY" in f for _, f in notes.seen)


def test_unexpected_extra_unnamed_fd_is_a_clear_error(make_activated) -> None:
    d = make_activated()
    cpath, lpath = sd_paths(d)
    socks = [
        bound(cpath, socket.SOCK_STREAM),
        bound(lpath, socket.SOCK_DGRAM),
        bound(d.root / "sd" / "x.sock", socket.SOCK_STREAM),
    ]
    err = _start_fails(d, socks, None)
    assert "two control sockets" in err


def test_wrong_socket_type_is_a_clear_error(make_activated) -> None:
    d = make_activated()
    cpath, lpath = sd_paths(d)
    # Named control, but a datagram socket (ListenDatagram= where ListenStream= was meant).
    err = _start_fails(d, [bound(cpath, socket.SOCK_DGRAM), bound(lpath, socket.SOCK_DGRAM)], "control:log")
    assert "fd 3 (control)" in err and "not a stream socket" in err
    assert_is_socket(cpath)  # still not ipcd's to remove


@needs_program("systemd-socket-activate")
def test_chained_systemd_socket_activate(make_activated, notes: Notes) -> None:
    d = make_activated()
    cpath, lpath = sd_paths(d)
    d.control_path = str(cpath)
    argv = [
        "systemd-socket-activate",
        "-l",
        str(cpath),
        "--fdname=control",
        "systemd-socket-activate",
        "--datagram",
        "-l",
        str(lpath),
        "--fdname=control:log",
        "-E",
        f"NOTIFY_SOCKET={notes.address}",
        *d.argv(),
    ]
    with open(d.stderr_path, "ab") as err:
        d.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=d.env)
    # Only the stream socket exists before the first connection; that connection starts ipcd.
    wait_for(lambda: cpath.exists() or d.proc.poll() is not None, 10, "the outer socket")
    assert not lpath.exists()
    d.wait_ready()  # its first connection starts ipcd; says why if ipcd exits instead
    with Conn(cpath) as c:
        st = c.call("status")
    assert st["pid"] == d.proc.pid  # each tool exec'd the next: LISTEN_PID was ipcd's
    assert st["activation"] == "systemd"
    assert st["sockets"] == {"control": str(cpath), "log": str(lpath)}
    notes.wait(lambda f: f.get("READY") == "1", 10, "READY=1")
    send_log(lpath, "via systemd-socket-activate")
    wait_for(lambda: stored(d, "via systemd-socket-activate"), 10, "the datagram to be stored")
    assert d.stop() == 0
    assert_is_socket(cpath)
    assert_is_socket(lpath)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, pytest.raises(ConnectionRefusedError):
        s.connect(str(cpath))  # nobody listens any more, but the file is left to its owner


# -- notify ------------------------------------------------------------------------


class Notes:
    """A NOTIFY_SOCKET that records each message as (arrival time, {KEY: VALUE})."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.seen: list[tuple[float, dict[str, str]]] = []
        self._checked = 0

    def poll(self) -> list[tuple[float, dict[str, str]]]:
        while True:
            try:
                raw = self.sock.recv(65536).decode("utf-8")
            except BlockingIOError:
                return self.seen
            now = time.monotonic()
            self.seen.append((now, dict(line.split("=", 1) for line in raw.split("\n"))))

    def wait(self, pred: Callable[[dict[str, str]], bool], timeout_s: float = 10.0, what: str = "") -> dict[str, str]:
        """The next message (after the last one `wait` returned) for which `pred` holds."""

        def find() -> dict[str, str] | None:
            self.poll()
            for i in range(self._checked, len(self.seen)):
                if pred(self.seen[i][1]):
                    self._checked = i + 1
                    return self.seen[i][1]
            return None

        return wait_for(find, timeout_s, what or "a notify message")

    def count(self, key: str) -> int:
        return sum(key in f for _, f in self.poll())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notes(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[Notes]:
    address = str(short_tmp / "notify") if request.param == "path" else f"@ipcd-test-{uuid.uuid4().hex}"
    n = Notes(address)
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def path_notes(short_tmp: Path) -> Iterator[Notes]:
    """One kind is enough where the address is not what is tested."""
    n = Notes(str(short_tmp / "notify"))
    try:
        yield n
    finally:
        n.close()


def notified(
    make_ipcd: Callable[..., Ipcd], notes: Notes, config: str = "", env: dict[str, str] | None = None, name: str = "d"
) -> Ipcd:
    d = make_ipcd(config, name)
    d.env.update({"NOTIFY_SOCKET": notes.address, **(env or {})})
    return d


def test_ready_status_stopping(make_ipcd, notes: Notes) -> None:
    d = notified(make_ipcd, notes, "[daemon]\nstatus_interval_s = 0.1\n")
    d.start(wait=False)
    ready = notes.wait(lambda f: "READY" in f, 15, "READY=1")
    # Nothing may claim readiness before it is true: both sockets answer right now, first try.
    with Conn(d.sock) as c:
        assert c.call("ping")["pong"]
    send_log(d.log_sock, "right after READY")
    assert notes.seen[0][1] is ready, "READY=1 must be the first message"
    assert ready["READY"] == "1" and "clients" in ready["STATUS"] and "msg/s" in ready["STATUS"]
    # STATUS= is refreshed, and it follows what happens.
    notes.wait(lambda f: "received" in f.get("STATUS", ""), 5, "a refreshed STATUS=")
    notes.wait(lambda f: "1 received" in f.get("STATUS", ""), 5, "STATUS= counting the datagram")
    with d.conn() as c:
        assert c.call("ping")["pong"]
        notes.wait(lambda f: f.get("STATUS", "").startswith("1 clients"), 5, "STATUS= counting the client")
    assert all("\n" not in f.get("STATUS", "") for _, f in notes.seen)
    d.send_signal(signal.SIGTERM)
    stopping = notes.wait(lambda f: "STOPPING" in f, 10, "STOPPING=1")
    assert stopping["STOPPING"] == "1"
    assert d.wait() == 0


def _fields_after(notes: Notes, first: dict[str, str]) -> list[dict[str, str]]:
    idx = next(i for i, (_, f) in enumerate(notes.seen) if f is first)
    return [f for _, f in notes.seen[idx + 1 :]]


def test_reload_by_ipcctl_is_synchronous(make_ipcd, notes: Notes) -> None:
    d = notified(make_ipcd, notes, "[control]\nmax_connections = 100\n").start()
    notes.wait(lambda f: "READY" in f, 10, "READY=1 at start")
    assert d.call("status")["connections"]["max"] == 100
    d.config.write_text("[control]\nmax_connections = 50\n")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    res = ipcctl("--socket", d.sock, "reload")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert res.returncode == 0, res.stderr
    assert f"reloaded {d.config}" in res.stdout
    # The reply came only when the reload was done: both messages are already here, no waiting.
    notes.poll()
    reloading = next(f for _, f in notes.seen if "RELOADING" in f)
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert any(f.get("READY") == "1" for f in _fields_after(notes, reloading)), notes.seen
    assert d.call("status")["connections"]["max"] == 50


def test_reload_by_sighup(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(make_ipcd, notes, "[control]\nmax_connections = 100\n").start()
    notes.wait(lambda f: "READY" in f, 10, "READY=1 at start")
    d.config.write_text("[control]\nmax_connections = 60\n")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    d.send_signal(signal.SIGHUP)
    reloading = notes.wait(lambda f: "RELOADING" in f, 10, "RELOADING=1")
    assert int(reloading["MONOTONIC_USEC"]) >= before
    notes.wait(lambda f: f.get("READY") == "1", 10, "READY=1 after the reload")
    assert d.call("status")["connections"]["max"] == 60
    assert "reloaded config from" in d.stderr()


def test_bad_config_on_reload_keeps_the_old_one(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(make_ipcd, notes)
    d.config = d.root / "ipcd-prüfung.toml"  # a UTF-8 name: STATUS= must carry it intact
    d.config.write_text("[control]\nmax_connections = 100\n")
    d.start()
    notes.wait(lambda f: "READY" in f, 10, "READY=1 at start")
    d.config.write_text('[control]\nmax_connections = "many"\n')
    res = ipcctl("--socket", d.sock, "reload")
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stderr
    assert "old config kept" in res.stderr and f"{d.config}:2" in res.stderr and "control.max_connections" in res.stderr
    assert "reload failed, keeping the old config" in d.stderr() and f"{d.config}:2" in d.stderr()
    notes.wait(lambda f: "RELOADING" in f, 5, "RELOADING=1")
    back = notes.wait(lambda f: "READY" in f, 5, "READY=1 after the failed reload")
    assert "old config kept" in back["STATUS"] and "ipcd-prüfung.toml:2" in back["STATUS"]
    assert d.call("status")["connections"]["max"] == 100
    # SIGHUP with the same bad file: logged, and the daemon stays up.
    d.send_signal(signal.SIGHUP)
    notes.wait(lambda f: "RELOADING" in f, 5, "RELOADING=1 on SIGHUP")
    notes.wait(lambda f: "READY" in f, 5, "READY=1 after the failed SIGHUP reload")
    assert d.call("ping")["pong"] and d.proc.poll() is None
    assert d.stderr().count("reload failed, keeping the old config") == 2
    d.config.write_text("[control]\nmax_connections = 70\n")
    assert ipcctl("--socket", d.sock, "reload").returncode == 0
    assert d.call("status")["connections"]["max"] == 70


def test_watchdog_cadence(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    usec = 400_000
    d = notified(make_ipcd, notes, env={"WATCHDOG_USEC": str(usec)}).start()
    wait_for(lambda: notes.count("WATCHDOG") >= 8, 10, "eight WATCHDOG=1 pings")
    times = [t for t, f in notes.seen if "WATCHDOG" in f]
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    assert gaps[len(gaps) // 2] == pytest.approx(usec / 2e6, abs=0.05), gaps  # every WATCHDOG_USEC/2
    assert gaps[-1] < usec / 1e6, gaps  # never late for the deadline
    wd = d.call("status")["watchdog"]
    assert wd["enabled"] is True and wd["interval_s"] == usec / 2e6 and wd["healthy"] is True
    assert wd["pings"] >= 8 and wd["problem"] is None


def test_watchdog_for_another_pid_sends_nothing(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(
        make_ipcd,
        notes,
        "[daemon]\nstatus_interval_s = 0.1\n",
        env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())},
    ).start()
    # Ten STATUS= refreshes are a second: ten ping intervals without a ping.
    wait_for(lambda: notes.count("STATUS") >= 10, 10, "ten STATUS= refreshes")
    assert notes.count("WATCHDOG") == 0
    assert d.call("status")["watchdog"] == {"enabled": False}


def test_watchdog_pid_set_to_ipcd_pings(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(make_ipcd, notes, env={"WATCHDOG_USEC": "200000"})
    with open(d.stderr_path, "ab") as err:
        d.proc = subprocess.Popen(
            ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *d.argv()],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=d.env,
        )
    d.wait_ready()
    wait_for(lambda: notes.count("WATCHDOG") >= 3, 10, "pings for WATCHDOG_PID = ipcd's pid")


def test_extend_timeout_while_a_long_drain_runs(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(make_ipcd, notes).start()
    c = d.conn(30.0)
    try:
        # Requests whose answers fill the socket buffers while this client reads none:
        # the drain at SIGTERM waits for them (up to its grace period).
        c.send(b'{"jsonrpc":"2.0","id":1,"method":"methods"}\n' * 1000)  # 45 kB: fits the buffer
        wait_for(lambda: d.call("status")["requests"]["total"] >= 10, 10, "the server to start answering")
        d.send_signal(signal.SIGTERM)
        notes.wait(lambda f: "STOPPING" in f, 10, "STOPPING=1")
        ext = notes.wait(lambda f: "EXTEND_TIMEOUT_USEC" in f, 10, "EXTEND_TIMEOUT_USEC= during the drain")
        assert int(ext["EXTEND_TIMEOUT_USEC"]) >= 1_000_000
        assert d.proc.poll() is None
    finally:
        c.close()
    assert d.wait() == 0


def test_failing_start_sends_status_and_errno(make_ipcd, notes: Notes) -> None:
    first = make_ipcd().start()
    second = notified(make_ipcd, notes)
    second.root, second.run_dir = first.root, first.run_dir  # the same runtime dir: a second instance
    second.stderr_path = first.root / "second.stderr"
    second.start(wait=False)
    assert second.wait() == 1
    msg = notes.wait(lambda f: "ERRNO" in f, 10, "STATUS= and ERRNO=")
    assert "already running" in msg["STATUS"] and msg["STATUS"].startswith("cannot start")
    assert msg["ERRNO"] == str(errno.EADDRINUSE)
    assert notes.count("READY") == 0
    assert first.call("ping")["pong"]


def test_config_error_at_start_sends_status_and_errno(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(make_ipcd, notes, "[control]\nmax_connections = -1\n")
    d.start(wait=False)
    assert d.wait() == 78
    msg = notes.wait(lambda f: "ERRNO" in f, 10, "STATUS= and ERRNO=")
    assert "control.max_connections" in msg["STATUS"] and msg["ERRNO"] == str(errno.EINVAL)


def test_without_notify_socket_ipcd_runs_the_same(make_ipcd) -> None:
    d = make_ipcd("[daemon]\nstatus_interval_s = 0.1\n")
    d.env.update({"WATCHDOG_USEC": "200000"})  # a watchdog but nowhere to send: no errors, no spam
    d.start()
    wd = wait_for(lambda: (w := d.call("status")["watchdog"])["pings"] >= 3 and w, 10, "pings counted")
    assert wd["healthy"]
    assert "notify" not in d.stderr().lower()
    assert d.stop() == 0


def test_wedged_store_writer_stops_the_pings(make_ipcd, path_notes: Notes) -> None:
    notes = path_notes
    d = notified(make_ipcd, notes, env={"WATCHDOG_USEC": "400000"}).start()
    wait_for(lambda: notes.count("WATCHDOG") >= 2, 10, "pings while healthy")
    db = d.state_dir / "ipcd.db"
    locker = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # the writer's next BEGIN IMMEDIATE now waits (busy_timeout)
        send_log(d.log_sock, "this one wedges the writer")
        wd = wait_for(
            lambda: (w := d.call("status")["watchdog"])["healthy"] is False and w, 10, "an unhealthy watchdog"
        )
        assert "stuck" in wd["problem"]
        wait_for(lambda: "not pinging systemd" in d.stderr(), 10, "the watchdog problem in the log")
        pings = notes.count("WATCHDOG")
        time.sleep(1.0)  # five ping intervals: the absence of pings is what is tested
        assert notes.count("WATCHDOG") == pings, "pings went on while the writer was wedged"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_for(lambda: notes.count("WATCHDOG") > pings, 10, "pings to resume once the writer moves again")
    wait_for(lambda: stored(d, "wedges the writer"), 10, "the datagram to be stored after all")
    assert d.call("status")["watchdog"]["healthy"] is True


@pytest.mark.parametrize("address", ["/nonexistent/notify", "@ipcd-test-nobody-listens-here"])
def test_failing_notify_socket_is_reported_once(make_ipcd, address: str) -> None:
    d = make_ipcd("[daemon]\nstatus_interval_s = 0.1\n")
    d.env.update({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
    d.start()
    # Every ping and every STATUS= is another send that fails.
    wait_for(lambda: d.call("status")["watchdog"]["pings"] >= 5, 10, "five watchdog rounds")
    assert d.call("ping")["pong"]
    assert d.stderr().count(f"cannot notify systemd at NOTIFY_SOCKET={address}") == 1, d.stderr()
    assert d.stop() == 0
    assert d.stderr().count("cannot notify systemd") == 1
