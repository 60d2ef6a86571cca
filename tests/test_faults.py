"""Faults: kill -9 under load, a full or read-only state dir, a store writer that dies."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Ipcd, needs_program, needs_root, wait_for
from helpers_fs import fill, start_on_tmpfs

from ipcd import config
from ipcd.daemon.daemon import Daemon
from ipcd.daemon.instance import Paths
from ipcd.daemon.systemd import Notifier


def send_many(path: str, n: int, tag: bytes = b"load") -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"<14>Nov 27 10:00:00 %s: entry %d" % (tag, i), path)


def test_kill_9_under_load_then_start_again(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[log]\nrate_limit_burst = 0\n").start()
    stop = threading.Event()

    def load() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            i = 0
            while not stop.is_set():
                try:
                    s.sendto(b"<14>load: %d" % i, d.log_sock)
                except OSError:
                    return  # the daemon is gone
                i += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        stored = wait_for(
            lambda: d.call("status")["logs"]["stored"] > 20_000 and d.call("status")["logs"]["stored"],
            60,
            "a good part of the load to be stored",
        )
        d.kill()  # SIGKILL, in the middle of it
    finally:
        stop.set()
        t.join(10)
    db = d.state_dir / "ipcd.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    conn.close()
    assert count >= stored  # what status called stored had been committed
    d.start()
    assert d.call("status")["store"]["entries"] == count
    send_many(d.log_sock, 10, b"after")
    wait_for(
        lambda: d.call("logs.query", {"ident": "after"})["entries"].__len__() == 10, 10, "new entries after restart"
    )


# -- a full or read-only state dir (a tiny tmpfs in a private mount namespace) --------


def in_ns(d: Ipcd, *argv: str) -> None:
    assert d.proc is not None
    subprocess.run(["nsenter", "-t", str(d.proc.pid), "-m", "--", *argv], check=True, capture_output=True, timeout=30)


@needs_root
@needs_program("unshare", "mount")
def test_state_dir_full_then_space_returns(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[log]\nrate_limit_burst = 0\n[store]\nmax_pending = 500\ncommit_interval_ms = 20\n")
    start_on_tmpfs(d, "4m")
    send_many(d.log_sock, 100, b"before")
    wait_for(lambda: d.call("status")["logs"]["stored"] == 100, 10, "the first entries")
    filler = Path(f"/proc/{d.proc.pid}/root") / str(d.state_dir).lstrip("/") / "filler"
    fill(filler)
    send_many(d.log_sock, 100, b"during")
    wait_for(lambda: d.call("status")["store"]["writer"] == "failing", 20, "the store to report the failure")
    # Now that the writer knows: more than max_pending, so some must be dropped, and counted.
    # (Sent before, they could all land before the first failed commit, and be held.)
    send_many(d.log_sock, 1900, b"during")
    wait_for(lambda: d.call("status")["logs"]["received"] == 2100, 20, "intake to go on while the store fails")
    st = d.call("status")
    assert "full" in st["store"]["error"]
    # Held: what waited for the failed commit, and new entries up to max_pending.
    assert st["logs"]["dropped"] > 0 and 0 < st["logs"]["pending"] < 2000
    assert st["logs"]["dropped"] + st["logs"]["pending"] + st["logs"]["stored"] == 2100
    assert "cannot write the store" in d.stderr()
    assert d.call("ping")["pong"]  # the control side never noticed
    filler.unlink()  # space returns
    wait_for(lambda: d.call("status")["store"]["writer"] == "ok", 20, "ipcd to recover by itself")
    wait_for(lambda: d.call("status")["logs"]["pending"] == 0, 20, "the held entries to be written")
    st = d.call("status")
    assert st["logs"]["stored"] + st["logs"]["dropped"] == 2100
    assert len(d.call("logs.query", {"ident": "during", "limit": 10000})["entries"]) == 2000 - st["logs"]["dropped"]
    assert "writable again" in d.stderr()
    assert d.stop() == 0


@needs_root
@needs_program("unshare", "mount")
def test_a_reloaded_log_level_reaches_the_log_process(make_ipcd) -> None:
    """The log process's own diagnostics follow `[daemon] log_level` on reload, as the control process's do:
    at "error", its warning that the store is writable again is not shown (the test above sees it at "info")."""
    d: Ipcd = make_ipcd("[log]\nrate_limit_burst = 0\n[store]\ncommit_interval_ms = 20\n")
    start_on_tmpfs(d, "4m")
    filler = Path(f"/proc/{d.proc.pid}/root") / str(d.state_dir).lstrip("/") / "filler"
    fill(filler)
    send_many(d.log_sock, 100, b"during")
    wait_for(lambda: d.call("status")["store"]["writer"] == "failing", 20, "the store to report the failure")
    d.config.write_text(d.config.read_text() + '[daemon]\nlog_level = "error"\n')
    assert d.call("reload")["reloaded"]
    filler.unlink()
    wait_for(lambda: d.call("status")["store"]["writer"] == "ok", 20, "ipcd to recover by itself")
    wait_for(lambda: d.call("status")["logs"]["pending"] == 0, 20, "the held entries to be written")
    assert d.stop() == 0
    err = d.stderr()
    assert "cannot write the store" in err  # an error: shown at every level
    assert "writable again" not in err, err


@needs_root
@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="needs loop devices (ext4 on a loop file)")
@needs_program("mkfs.ext4", "unshare", "mount", "nsenter", "findmnt")
def test_state_dir_turning_read_only(make_ipcd, short_tmp) -> None:
    # ext4 remounts itself read-only on an error (errors=remount-ro), as it
    # does when a disk fails; its sysfs trigger_fs_error raises one on purpose.
    image = short_tmp / "state.img"
    with open(image, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    d: Ipcd = make_ipcd("[store]\ncommit_interval_ms = 20\n")
    d.state_dir.mkdir(parents=True)
    script = f'mount -o loop,errors=remount-ro "{image}" "{d.state_dir}" && exec "$@"'
    with open(d.stderr_path, "ab") as err:
        d.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *d.argv()],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=d.env,
        )
    d.wait_ready()
    send_many(d.log_sock, 10, b"rw")
    wait_for(lambda: d.call("status")["logs"]["stored"] == 10, 10, "entries while writable")
    dev = subprocess.run(
        ["nsenter", "-t", str(d.proc.pid), "-m", "--", "findmnt", "-n", "-o", "SOURCE", str(d.state_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(f"/sys/fs/ext4/{os.path.basename(dev)}/trigger_fs_error").write_text("ipcd test: turning read-only\n")
    send_many(d.log_sock, 10, b"ro")

    def failing() -> bool:
        st = d.call("status")
        return st["store"]["writer"] == "failing" and st["logs"]["received"] == 20

    wait_for(failing, 20, "the read-only store to be reported while intake goes on")
    st = d.call("status")
    assert st["logs"]["stored"] == 10 and st["logs"]["pending"] == 10
    assert "cannot write the store" in d.stderr()
    assert d.call("ping")["pong"] and d.call("kv.list")["keys"] == []
    err = d.call("kv.set", {"key": "k", "value": 1})
    assert err["code"] == -32603 and "could not be written" in err["message"]
    with d.conn() as c:  # pipelined writes that share the failed commit: each answered with the error, in order
        c.send(
            b"".join(
                b'{"jsonrpc":"2.0","id":%d,"method":"kv.set","params":{"key":"p%d","value":1}}\n' % (i, i)
                for i in range(3)
            )
            + b'{"jsonrpc":"2.0","id":3,"method":"kv.get","params":{"key":"p0"}}\n'
        )
        replies = [c.recv_json() for _ in range(4)]
        assert [(r["id"], r["error"]["code"]) for r in replies] == [(0, -32603), (1, -32603), (2, -32603), (3, -32003)]
        assert c.call("kv.list")["keys"] == []  # undone in memory before the get in the same read ran
    assert d.stop() == 0  # nothing crashes; the entries it could not keep are named in its log
    assert "entries lost" in d.stderr()


# -- a log process that hangs or dies ---------------------------------------------------


def test_a_stuck_log_process_stops_the_watchdog_until_it_turns_again(short_tmp) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(short_tmp / "notify")
    notify.bind(notify_path)
    notify.settimeout(0.05)
    paths = Paths(short_tmp / "run", short_tmp / "state", None, False)
    d = Daemon(config.Config(), paths, Notifier({"NOTIFY_SOCKET": notify_path}))
    d.health.watchdog_s = 0.05
    umask = os.umask(0o022)
    os.umask(umask)
    d.start()
    os.umask(umask)  # the daemon's own umask (077) is not this test process's
    runner = threading.Thread(target=d.run)
    runner.start()
    notes: list[str] = []

    def read_notes() -> list[str]:
        try:
            while True:
                notes.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
        return notes

    assert d.logs is not None
    log_pid = d.logs.pid
    try:
        wait_for(lambda: sum(n == "WATCHDOG=1" for n in read_notes()) >= 3, 10, "watchdog pings while healthy")
        os.kill(log_pid, signal.SIGSTOP)  # a real hang: the process runs no more
        wait_for(lambda: d.health.problem() is not None, 10, "the hang to be noticed")
        st = d.app.status()
        assert st["watchdog"]["healthy"] is False and "stuck" in st["watchdog"]["problem"]
        read_notes()
        before = notes.count("WATCHDOG=1")
        time.sleep(0.5)  # ten ping intervals: none may come now (the absence is the point)
        assert read_notes().count("WATCHDOG=1") == before
        os.kill(log_pid, signal.SIGCONT)
        wait_for(lambda: read_notes().count("WATCHDOG=1") > before, 10, "pings again once it turns")
    finally:
        os.kill(log_pid, signal.SIGCONT)
        d.request_stop()
        runner.join(10)
        d.stop(quiet=True)
        notify.close()
    assert d.failure is None


def test_a_dead_log_process_stops_ipcd_with_exit_1(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    log_pid = d.call("status")["log_process"]["pid"]
    assert log_pid and log_pid != d.proc.pid
    os.kill(log_pid, signal.SIGKILL)
    assert d.wait(20) == 1
    assert f"the log process (pid {log_pid}) died: killed by signal SIGKILL; ipcd stops" in d.stderr()
    assert not Path(d.sock).exists()  # it stopped in order: its socket files are gone


def test_a_log_process_stopped_by_sigterm_stops_ipcd_cleanly(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    os.kill(d.call("status")["log_process"]["pid"], signal.SIGTERM)  # as `kill` on the whole group would
    assert d.wait(20) == 0


def test_sigterm_while_store_is_busy_still_commits(make_ipcd) -> None:
    d: Ipcd = make_ipcd(
        "[log]\nrate_limit_burst = 0\n[store]\ncommit_interval_ms = 5000\ncommit_batch = 1000000\n"
    ).start()
    send_many(d.log_sock, 3000, b"pending")
    wait_for(lambda: d.call("status")["logs"]["received"] == 3000, 10, "intake")
    assert d.call("status")["logs"]["stored"] == 0  # not committed yet: the interval is long
    assert d.stop(signal.SIGTERM) == 0
    with sqlite3.connect(d.state_dir / "ipcd.db") as conn:
        n = conn.execute("SELECT count(*) FROM entries WHERE ident = 'pending'").fetchone()[0]
    conn.close()
    assert n == 3000


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_store_from_a_newer_ipcd_is_refused(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.state_dir.mkdir(parents=True)
    with sqlite3.connect(d.state_dir / "ipcd.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    d.start(wait=False)
    assert d.wait() == 1
    assert "newer" in d.stderr() and "upgrade ipcd" in d.stderr()
    assert os.path.exists(d.state_dir / "ipcd.db")
