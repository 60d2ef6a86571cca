"""`ipcd.logs.worker`, the log process, in a real ipcd: what it stored survives a restart, a stop and a kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import Ipcd, needs_program, wait_for
from helpers_logs import NO_LIMIT, db_rows, only, query, run, send, status, wait_stored


@needs_program("logger")
def test_entries_persist_across_a_graceful_restart(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, b"<13>keep: one", b'{"message": "two", "fields": {"a": 1}}', b'<165>1 - h app 5 - [s@1 x="y"] three')
    run(["logger", "-u", d.log_sock, "-t", "keep", "four"])
    wait_stored(d, 4)
    before = query(d)
    assert d.stop() == 0
    d.start()
    assert query(d) == before
    st = status(d)
    assert (st["store"]["entries"], st["logs"]["received"], st["logs"]["stored"]) == (4, 0, 0)
    send(d, b"<13>keep: five")
    wait_stored(d, 1)
    assert [e["id"] for e in query(d)] == [1, 2, 3, 4, 5]


def sigterm_while_sending(d: Ipcd, senders: int = 6) -> int:
    """Start `d`, SIGTERM it while threads send as fast as they can; how many sendto(2) succeeded."""
    d.start()
    counts = [0] * senders

    def sender(k: int) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            i = 0
            while True:
                try:
                    s.sendto(b"<13>drain: s%d m%d" % (k, i), d.log_sock)
                except OSError:  # the socket is gone (ENOENT) or shut (EPIPE): ipcd is stopping
                    return
                counts[k] += 1
                i += 1

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(counts) >= 3000, 20, "3000 datagrams sent")
        d.send_signal(signal.SIGTERM)
    finally:
        for t in threads:
            t.join(30)
    assert d.wait() == 0, d.stderr()
    return sum(counts)


def test_stop_drains_datagrams_sent_before_it(make_ipcd: Callable[..., Ipcd]) -> None:
    """Every sendto that succeeded is stored, with senders racing the SIGTERM."""
    d = make_ipcd(config=NO_LIMIT)
    # A sender blocked on the full queue could slip a datagram in after the last read: the
    # window is narrow, so several rounds.
    total = sum(sigterm_while_sending(d) for _ in range(5))
    d.start()
    st = status(d)
    assert (st["store"]["entries"], st["logs"]["received"]) == (total, 0)
    assert db_rows(d, "SELECT count(*), min(id), max(id) FROM entries") == [(total, 1, total)]


def test_stop_drains_what_is_queued_on_the_socket(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config=NO_LIMIT).start()
    send(d, *[b"<13>queued: early %d" % i for i in range(100)])
    st = wait_stored(d, 100)
    assert (st["logs"]["received"], st["store"]["entries"]) == (100, 100)
    # Frozen, ipcd reads nothing: fill its socket queue to the brim, then stop it.
    d.send_signal(signal.SIGSTOP)
    queued = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    s.sendto(b"<13>queued: late %d" % queued, d.log_sock)
                    queued += 1
        d.send_signal(signal.SIGTERM)
    finally:
        d.send_signal(signal.SIGCONT)
    assert queued >= 1
    assert d.wait() == 0, d.stderr()
    d.start()
    messages = [e["message"] for e in query(d, limit=1000)]
    assert messages == [f"early {i}" for i in range(100)] + [f"late {i}" for i in range(queued)]
    assert status(d)["store"]["entries"] == 100 + queued


def test_kill_9_then_restart(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config=NO_LIMIT).start()
    send(d, *[b"<13>crash: committed %d" % i for i in range(50)])
    wait_stored(d, 50)
    committed = query(d)
    log_pid = status(d)["log_process"]["pid"]
    stop = threading.Event()

    def stream() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            i = 0
            while not stop.is_set():
                try:
                    s.sendto(b"<13>crash: in flight %d" % i, d.log_sock)
                except OSError:
                    return
                i += 1

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_for(lambda: status(d)["logs"]["stored"] >= 2000, 20, "writes in full flow")
        os.kill(log_pid, signal.SIGKILL)  # both processes, mid-stream, the writer first
        d.kill()
        wait_for(lambda: not Path(f"/proc/{log_pid}").exists(), 10, "the log process to be gone")
    finally:
        stop.set()
        t.join(30)
    assert os.path.exists(d.state_dir / "ipcd.db-wal")
    assert db_rows(d, "PRAGMA integrity_check") == [("ok",)]
    n, low, high = db_rows(d, "SELECT count(*), min(id), max(id) FROM entries")[0]
    assert n >= 2000 and (low, high) == (1, n)  # whole transactions only: no holes
    d.start()
    st = status(d)
    assert (st["store"]["entries"], st["store"]["writer"]) == (n, "ok")
    assert query(d, after_id=0, limit=50) == committed
    send(d, b"<13>crash: after restart")
    wait_stored(d, 1)
    assert only(query(d, limit=1))["id"] == n + 1
