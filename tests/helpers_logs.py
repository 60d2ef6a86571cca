"""Helpers for the tests of the log socket against a real ipcd: send datagrams, read them back.

Nothing waits by sleeping: `wait_stored` polls `status` with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conftest import Conn, Ipcd, wait_for

MY_PID = os.getpid()
MY_COMM = Path(f"/proc/{MY_PID}/comm").read_text().strip()
HOSTNAME = socket.gethostname()
NO_LIMIT = "[log]\nrate_limit_burst = 0\n"
TS_3164 = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"


def send(d: Ipcd, *datagrams: bytes) -> None:
    """Datagrams from this process, as a program calling sendto(2) would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for data in datagrams:
            s.sendto(data, d.log_sock)


def status(d: Ipcd) -> dict[str, Any]:
    st = d.call("status")
    assert "logs" in st, st
    return st  # type: ignore[no-any-return]


def query(d: Ipcd, **params: Any) -> list[dict[str, Any]]:
    res = d.call("logs.query", params)
    assert "entries" in res, res
    return res["entries"]  # type: ignore[no-any-return]


def wait_stored(d: Ipcd, n: int, timeout_s: float = 10.0) -> dict[str, Any]:
    """Wait until `n` entries are committed; exactly `n`, no more."""
    wait_for(lambda: status(d)["logs"]["stored"] >= n, timeout_s, f"{n} entries stored")
    st = status(d)
    assert st["logs"]["stored"] == n, st["logs"]
    return st


def run(argv: list[str], stdin: bytes | None = None) -> int:
    """Run a client to completion; its pid (the sender pid the kernel reports)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(stdin, timeout=30)
    assert proc.returncode == 0, (argv, out, err)
    return proc.pid


@contextlib.contextmanager
def alive(argv: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[bytes], None]]]:
    """A client reading its messages from stdin, alive until the block ends.

    ipcd reads a sender's command name from /proc when its datagram comes in;
    a sender that has exited by then has none (as journald's _COMM).  Kept
    alive, it always has one.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None

    def write(data: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.flush()

    try:
        yield proc, write
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (argv, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def only(entries: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(entries) == 1, entries
    return entries[0]


def db_rows(d: Ipcd, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(d.state_dir / "ipcd.db"))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def notes(conn: Conn, n: int) -> list[dict[str, Any]]:
    """The next `n` notifications on a control connection (its timeout bounds each wait)."""
    out = []
    for _ in range(n):
        msg = conn.recv_json()
        assert "id" not in msg, msg
        out.append(msg)
    return out


def entry_ids(msgs: list[dict[str, Any]]) -> list[int]:
    assert all(m["method"] == "logs.entry" for m in msgs), msgs
    return [m["params"]["id"] for m in msgs]
