"""The log socket end to end: a real ipcd, real clients, its real sockets.

Datagrams come from util-linux `logger -u`, Python's `SysLogHandler`, a raw
`sendto`, JSON and `socat`; they are read back with `logs.query`,
`logs.follow`, `ipcctl logs` and straight from the SQLite file.  Counters
in `status` are checked exactly.  Nothing waits by sleeping: `wait_for`
polls with a deadline; the one paced sleep (waiting out a rate-limit
window) says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import logging.handlers
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Conn, Ipcd, ipcctl, ipcctl_in_process, needs_program, needs_root, run_as, wait_for

from ipcd import procfs
from ipcd.logs.recvmmsg import Receiver

MY_PID = os.getpid()
MY_COMM = Path(f"/proc/{MY_PID}/comm").read_text().strip()
HOSTNAME = socket.gethostname()
NO_LIMIT = "[log]\nrate_limit_burst = 0\n"
TS_3164 = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"


# --- helpers -----------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def shared() -> Iterator[Ipcd]:
    """One daemon for the tests that only add entries and read back their own."""
    root = Path(tempfile.mkdtemp(prefix="ipcd-", dir="/tmp"))
    os.chmod(root, 0o755)  # other uids must reach the sockets
    d = Ipcd(root, NO_LIMIT)
    try:
        d.start()
        yield d
        assert d.stop() == 0
    finally:
        d.kill()
        shutil.rmtree(root, ignore_errors=True)


# --- real clients, each form ------------------------------------------------------------

LOGGER_CASES = [
    pytest.param(
        ["-t", "fmtdefault"],
        "plain default",
        {"format": "rfc3164", "ident": "fmtdefault", "pid": None, "hostname": None, "priority": 5, "facility": 1},
        id="default",
    ),
    pytest.param(
        ["-i", "-t", "fmtpid"],
        "with its pid",
        {"format": "rfc3164", "ident": "fmtpid", "pid": "SENDER", "hostname": None},
        id="-i",
    ),
    pytest.param(
        ["--id=4242", "-t", "fmtclaim"],
        "a claimed pid",
        {"format": "rfc3164", "ident": "fmtclaim", "pid": 4242},
        id="--id",
    ),
    pytest.param(
        ["--rfc3164", "-t", "fmt3164"],
        "old style",
        {"format": "rfc3164", "ident": "fmt3164", "hostname": HOSTNAME.split(".")[0]},
        id="rfc3164",
    ),
    pytest.param(
        ["--rfc5424", "-t", "fmt5424", "--msgid", "M42", "--sd-id", "ex@32473", "--sd-param", 'a="b c"'],
        "new style",
        {"format": "rfc5424", "ident": "fmt5424", "msgid": "M42", "hostname": HOSTNAME, "pid": None},
        id="rfc5424",
    ),
    pytest.param(
        ["--octet-count", "-t", "fmtoc"], "counted", {"format": "rfc3164", "ident": "fmtoc"}, id="octet-count"
    ),
    pytest.param(
        ["--rfc5424", "--octet-count", "-t", "fmtoc5424"],
        "counted new style",
        {"format": "rfc5424", "ident": "fmtoc5424"},
        id="rfc5424-octet-count",
    ),
    pytest.param(
        ["-p", "local3.err", "-t", "fmtprio"],
        "a priority",
        {"format": "rfc3164", "priority": 3, "facility": 19},
        id="-p local3.err",
    ),
    pytest.param(
        ["-p", "auth.crit", "--rfc5424", "-t", "fmtprio5424"],
        "a priority, new style",
        {"format": "rfc5424", "priority": 2, "facility": 4},
        id="-p auth.crit rfc5424",
    ),
]


@needs_program("logger")
@pytest.mark.parametrize(("args", "message", "expect"), LOGGER_CASES)
def test_logger(shared: Ipcd, args: list[str], message: str, expect: dict[str, Any]) -> None:
    with alive(["logger", "-u", shared.log_sock, *args]) as (proc, write):
        write(message.encode() + b"\n")
        pid = proc.pid
        e = only(wait_for(lambda: query(shared, pid=pid), 10, "logger's entry"))
    expect = {k: (pid if v == "SENDER" else v) for k, v in expect.items()}
    assert {k: e[k] for k in expect} == expect
    assert e["message"] == message
    # The trusted fields, from the kernel and /proc: never from the message.
    assert (e["sender_pid"], e["sender_uid"], e["sender_gid"], e["sender_comm"]) == (pid, 0, os.getgid(), "logger")
    assert e["truncated"] is False
    if e["format"] == "rfc3164":
        assert re.fullmatch(TS_3164, e["timestamp"])
    else:
        assert dt.datetime.fromisoformat(e["timestamp"]).tzinfo is not None
    if "--sd-id" in args:
        assert e["structured_data"]["ex@32473"] == {"a": "b c"}
        assert set(e["structured_data"]) == {"timeQuality", "ex@32473"}


@needs_program("logger")
def test_logger_message_argument(shared: Ipcd) -> None:
    pid = run(["logger", "-u", shared.log_sock, "-t", "argmsg", "-i", "the", "message words"])
    e = only(wait_for(lambda: query(shared, pid=pid), 10, "logger's entry"))
    assert (e["ident"], e["pid"], e["message"], e["sender_uid"]) == ("argmsg", pid, "the message words", 0)


@needs_program("logger")
def test_logger_reads_stdin_one_datagram_per_line(shared: Ipcd) -> None:
    pid = run(["logger", "-u", shared.log_sock, "-t", "stdinlines"], stdin=b"first\nsecond line\n\nthird\n")
    entries = wait_for(lambda: len(got := query(shared, pid=pid)) >= 4 and got, 10, "four lines")
    assert [e["message"] for e in entries] == ["first", "second line", "", "third"]  # an empty line too
    assert {e["ident"] for e in entries} == {"stdinlines"}


def test_python_sysloghandler(shared: Ipcd) -> None:
    handler = logging.handlers.SysLogHandler(
        address=shared.log_sock, facility=logging.handlers.SysLogHandler.LOG_LOCAL0
    )
    handler.setFormatter(logging.Formatter("pyapp[%(process)d]: %(message)s"))
    bare = logging.handlers.SysLogHandler(address=shared.log_sock)
    bare.ident = "pyident: "
    logger = logging.getLogger("test_logs.syslog")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.addHandler(handler)
        logger.error("boom")
        logger.debug("details, ünïcode")
        logger.removeHandler(handler)
        logger.addHandler(bare)
        logger.warning("no formatter")
    finally:
        logger.removeHandler(bare)
        handler.close()
        bare.close()
    entries = wait_for(
        lambda: len(got := query(shared, pid=MY_PID, grep="boom|ünïcode|no formatter")) >= 3 and got,
        10,
        "SysLogHandler's three entries",
    )
    assert [
        (e["priority"], e["facility"], e["ident"], e["pid"], e["message"], e["format"], e["timestamp"]) for e in entries
    ] == [
        (3, 16, "pyapp", MY_PID, "boom", "rfc3164", None),
        (7, 16, "pyapp", MY_PID, "details, ünïcode", "rfc3164", None),
        (4, 1, "pyident", None, "no formatter", "rfc3164", None),
    ]
    assert {(e["sender_pid"], e["sender_comm"]) for e in entries} == {(MY_PID, MY_COMM)}
    # The sender's systemd unit, as /proc/PID/cgroup says (None outside any unit).
    assert {e["sender_unit"] for e in entries} == {procfs.unit(MY_PID)}


def test_raw_sendto_and_json(shared: Ipcd) -> None:
    send(
        shared,
        b"<14>rawtag: raw message\n",
        b'<165>1 2026-11-27T10:00:00.5Z myhost rawapp 77 ID9 [x@1 k="v"] raw five',
        json.dumps(
            {
                "message": "json hello",
                "priority": "err",
                "ident": "jsonapp",
                "pid": 99,
                "fields": {"user": "bob", "n": 3},
                "request": "r1",
            }
        ).encode(),
        b'{"message": "json defaults"}',
        b"just words, no header",
    )
    entries = wait_for(
        lambda: len(got := query(shared, pid=MY_PID, grep="raw|json|just words")) >= 5 and got, 10, "five entries"
    )
    got = [
        {
            k: e[k]
            for k in (
                "priority",
                "facility",
                "ident",
                "pid",
                "hostname",
                "msgid",
                "timestamp",
                "structured_data",
                "fields",
                "message",
                "format",
            )
        }
        for e in entries
    ]
    assert got == [
        {
            "priority": 6,
            "facility": 1,
            "ident": "rawtag",
            "pid": None,
            "hostname": None,
            "msgid": None,
            "timestamp": None,
            "structured_data": None,
            "fields": None,
            "message": "raw message",
            "format": "rfc3164",
        },
        {
            "priority": 5,
            "facility": 20,
            "ident": "rawapp",
            "pid": 77,
            "hostname": "myhost",
            "msgid": "ID9",
            "timestamp": "2026-11-27T10:00:00.5Z",
            "structured_data": {"x@1": {"k": "v"}},
            "fields": None,
            "message": "raw five",
            "format": "rfc5424",
        },
        {
            "priority": 3,
            "facility": 1,
            "ident": "jsonapp",
            "pid": 99,
            "hostname": None,
            "msgid": None,
            "timestamp": None,
            "structured_data": None,
            "fields": {"request": "r1", "user": "bob", "n": 3},
            "message": "json hello",
            "format": "json",
        },
        {
            "priority": 6,
            "facility": 1,
            "ident": None,
            "pid": None,
            "hostname": None,
            "msgid": None,
            "timestamp": None,
            "structured_data": None,
            "fields": None,
            "message": "json defaults",
            "format": "json",
        },
        {
            "priority": 5,
            "facility": 1,
            "ident": None,
            "pid": None,
            "hostname": None,
            "msgid": None,
            "timestamp": None,
            "structured_data": None,
            "fields": None,
            "message": "just words, no header",
            "format": "plain",
        },
    ]


@needs_program("socat")
def test_socat_unix_sendto(shared: Ipcd) -> None:
    with alive(["socat", "-u", "-", f"UNIX-SENDTO:{shared.log_sock}"]) as (proc, write):
        write(b"<11>socattag[5]: hi from socat\n")
        pid = proc.pid
        e = only(wait_for(lambda: query(shared, pid=pid), 10, "socat's entry"))
    got = (e["ident"], e["pid"], e["priority"], e["message"], e["sender_comm"])
    assert got == ("socattag", 5, 3, "hi from socat", "socat")


# --- trusted and claimed ------------------------------------------------------------------


def test_spoofed_ident_and_pid_stay_apart_from_the_sender(shared: Ipcd) -> None:
    send(shared, b"<38>Nov 27 10:00:00 sshd[1]: Accepted password for root (spoofed)")
    e = only(wait_for(lambda: query(shared, grep="spoofed"), 10, "the spoofed entry"))
    assert (e["ident"], e["pid"], e["facility"], e["priority"]) == ("sshd", 1, 4, 6)  # as claimed
    trusted = (e["sender_pid"], e["sender_uid"], e["sender_gid"], e["sender_comm"])
    assert trusted == (MY_PID, 0, os.getgid(), MY_COMM)  # as the kernel saw it
    # --pid filters on the trusted pid: the claimed one finds nothing.
    assert query(shared, pid=1, grep="spoofed") == []


@needs_root
def test_sender_uid_and_gid_come_from_the_kernel(shared: Ipcd) -> None:
    def child() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(
                b"<86>Nov 27 10:00:00 CRON[1]: pam_unix(cron:session): session opened for user root by nobody",
                shared.log_sock,
            )
        return 0, str(os.getpid())

    code, out = run_as(65534, 65534, child)
    assert code == 0, out
    e = only(wait_for(lambda: query(shared, grep="opened for user root by nobody"), 10, "nobody's entry"))
    assert (e["ident"], e["pid"]) == ("CRON", 1)
    assert (e["sender_pid"], e["sender_uid"], e["sender_gid"]) == (int(out), 65534, 65534)
    assert query(shared, uid=65534, grep="by nobody") == [e]


# --- bad bytes, truncation, counters -------------------------------------------------------------


def test_bad_bytes_are_kept_and_counted(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, b"")  # counted as received and malformed, never stored
    wait_for(lambda: status(d)["logs"]["received"] == 1, 10, "the empty datagram to be read")
    send(
        d,
        b"<13>badutf: caf\xe9 \xff\xfe end",
        b"<999>hello with a bad PRI",
        b"<13>nul: before\x00after\x00",
        b"\xc3(\xa0\xa1",
    )
    st = wait_stored(d, 4)
    assert st["logs"] == {
        "received": 5,
        "stored": 4,
        "rate_limited": 0,
        "truncated": 0,
        "malformed": 2,
        "dropped": 0,
        "pending": 0,
        "followers": 0,
    }
    got = [(e["ident"], e["message"], e["format"]) for e in query(d)]
    assert got == [
        ("badutf", "caf\ufffd \ufffd\ufffd end", "rfc3164"),
        (None, "<999>hello with a bad PRI", "plain"),
        ("nul", "before\x00after", "rfc3164"),  # the trailing NUL goes, an inner one stays
        (None, "\ufffd(\ufffd\ufffd", "plain"),
    ]
    assert st["store"]["entries"] == 4


def test_truncation_at_the_exact_edge(make_ipcd: Callable[..., Ipcd]) -> None:
    n = 200
    d = make_ipcd(config=f"[log]\nmax_datagram_bytes = {n}\n").start()
    whole = b"<13>edge: " + b"w" * (n - 11) + b"W"
    over = b"x" * n + b"Y"
    long = b"<11>long[7]: " + b"z" * 5000
    assert (len(whole), len(over)) == (n, n + 1)
    send(d, whole, over, long)
    st = wait_stored(d, 3)
    assert (st["logs"]["truncated"], st["logs"]["malformed"], st["logs"]["received"]) == (2, 0, 3)
    a, b, c = query(d)
    assert (a["message"], a["truncated"]) == (whole[10:].decode(), False)
    assert (b["message"], b["truncated"], b["format"]) == ("x" * n, True, "plain")
    # Cut at max_datagram_bytes, the header still parses.
    assert (c["ident"], c["pid"], c["priority"], c["message"], c["truncated"]) == ("long", 7, 3, "z" * (n - 13), True)
    out = ipcctl("--socket", d.sock, "logs", "-n", "2")
    assert out.returncode == 0, out.stderr
    assert [line.endswith(" [truncated]") for line in out.stdout.splitlines()] == [True, True]


def test_default_max_datagram_is_64_kib(shared: Ipcd) -> None:
    head = b"<13>big64k: "
    send(shared, head + b"a" * (65536 - len(head)), head + b"b" * (65537 - len(head)))
    a, b = wait_for(lambda: len(got := query(shared, ident="big64k")) >= 2 and got, 10, "the two big entries")
    assert (len(a["message"]), a["truncated"]) == (65536 - len(head), False)
    assert (b["message"], b["truncated"]) == ("b" * (65536 - len(head)), True)


def test_status_logs_and_store_sections(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[log]\nmax_datagram_bytes = 100\n").start()
    st = status(d)
    db = str(d.state_dir / "ipcd.db")
    assert st["logs"] == {
        "received": 0,
        "stored": 0,
        "rate_limited": 0,
        "truncated": 0,
        "malformed": 0,
        "dropped": 0,
        "pending": 0,
        "followers": 0,
    }
    store = st["store"]
    assert (store["path"], store["entries"], store["deleted"], store["writer"]) == (db, 0, 0, "ok")
    send(d, b"<13>a: one", b"<13>a: two", b"", b"<300>bad", b"t" * 101)
    st = wait_stored(d, 4)
    assert st["logs"] == {
        "received": 5,
        "stored": 4,
        "rate_limited": 0,
        "truncated": 1,
        "malformed": 2,
        "dropped": 0,
        "pending": 0,
        "followers": 0,
    }
    assert st["store"]["entries"] == 4
    files = sum(os.stat(db + s).st_size for s in ("", "-wal", "-shm") if os.path.exists(db + s))
    assert st["store"]["bytes"] == files
    res = ipcctl("--socket", d.sock, "status")
    assert res.returncode == 0, res.stderr
    assert "  logs      5 received, 4 stored, 0 rate-limited, 1 truncated, 2 malformed, 0 dropped" in res.stdout
    assert f"  store     {db}, " in res.stdout and ", 4 entries" in res.stdout


# --- rate limiting ----------------------------------------------------------------------------------


@needs_program("logger")
def test_rate_limit_at_its_edge(make_ipcd: Callable[..., Ipcd]) -> None:
    interval_s = 0.5
    d = make_ipcd(config=f"[log]\nrate_limit_burst = 3\nrate_limit_interval_s = {interval_s}\n").start()
    log_pid = status(d)["log_process"]["pid"]  # the log process writes ipcd's own entries
    who = f"{MY_COMM}[{MY_PID}]"
    # Another sender (another command) has a budget of its own.
    run(["logger", "-u", d.log_sock, "-t", "rl", "w1 from logger"])
    wait_stored(d, 1)
    # Window 1: three pass, the fourth and fifth do not; crit and above always pass.
    send(
        d,
        *[b"<13>rl: w1 n%d" % i for i in range(5)],
        b"<10>rl: w1 crit",
        b"<9>rl: w1 alert",
        b"<8>rl: w1 emerg",
        b"<11>rl: w1 err",
    )
    wait_for(lambda: query(d, ident="ipcd"), 10, "the suppressed report of window 1")
    entries = query(d)
    assert [(e["ident"], e["message"]) for e in entries] == [
        ("rl", "w1 from logger"),
        ("rl", "w1 n0"),
        ("rl", "w1 n1"),
        ("rl", "w1 n2"),
        ("rl", "w1 crit"),
        ("rl", "w1 alert"),
        ("rl", "w1 emerg"),
        ("ipcd", f"suppressed 3 messages from {who}"),
    ]
    report = entries[-1]
    got = (report["priority"], report["facility"], report["fields"], report["sender_pid"])
    assert got == (4, 5, {"suppressed": 3, "sender": who}, log_pid)  # warning, syslog, from ipcd itself
    assert report["sender_comm"] == "ipcd-log"
    logs = status(d)["logs"]
    assert (logs["received"], logs["rate_limited"], logs["stored"]) == (10, 3, 8)

    # Window 2: one over the burst; the next message after the window brings the report.
    send(d, *[b"<13>rl: w2 n%d" % i for i in range(4)])
    wait_stored(d, 11)
    time.sleep(interval_s)  # paced: wait out the rate-limit window (no condition to poll for)
    send(d, b"<13>rl: after w2")
    wait_for(lambda: query(d, grep="after w2"), 10, "the first message of window 3")
    tail = [(e["ident"], e["message"]) for e in query(d, after_id=8)]
    assert tail == [
        ("rl", "w2 n0"),
        ("rl", "w2 n1"),
        ("rl", "w2 n2"),
        ("ipcd", f"suppressed 1 messages from {who}"),
        ("rl", "after w2"),
    ]
    logs = status(d)["logs"]
    assert (logs["received"], logs["rate_limited"], logs["stored"]) == (15, 4, 13)
    assert len(query(d, ident="ipcd")) == 2  # one report per window, never twice


# --- retention ---------------------------------------------------------------------------------------


def test_retention_by_max_entries(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[store]\nmax_entries = 5\nretention_interval_s = 0.05\n").start()
    send(d, *[b"<13>ret: m%d" % i for i in range(12)])
    wait_stored(d, 12)
    wait_for(lambda: status(d)["store"]["entries"] == 5, 10, "retention down to 5 entries")
    assert [e["id"] for e in query(d)] == [8, 9, 10, 11, 12]
    assert status(d)["store"]["deleted"] == 7
    assert db_rows(d, "SELECT min(id), max(id), count(*) FROM entries") == [(8, 12, 5)]


def test_retention_by_max_bytes(make_ipcd: Callable[..., Ipcd]) -> None:
    max_bytes = 1024 * 1024
    d = make_ipcd(config=f"{NO_LIMIT}[store]\nmax_bytes = {max_bytes}\nretention_interval_s = 0.05\n").start()
    n = 3000
    for i in range(0, n, 500):
        send(d, *[b"<13>bytes: %05d " % j + b"x" * 1000 for j in range(i, i + 500)])
    wait_stored(d, n)

    def used() -> int:
        ((pages, free, size),) = db_rows(d, "SELECT * FROM pragma_page_count, pragma_freelist_count, pragma_page_size")
        return int((pages - free) * size)

    wait_for(lambda: used() <= max_bytes, 10, "retention to bring the store under max_bytes")
    ids = [r[0] for r in db_rows(d, "SELECT id FROM entries ORDER BY id")]
    assert 0 < len(ids) < n
    assert ids == list(range(n - len(ids) + 1, n + 1))  # the newest kept, no holes
    st = status(d)["store"]
    assert (st["entries"], st["deleted"]) == (len(ids), n - len(ids))


def test_retention_by_max_age(make_ipcd: Callable[..., Ipcd]) -> None:
    max_age_s = 1.0
    d = make_ipcd(config=f"[store]\nmax_age_s = {max_age_s}\nretention_interval_s = 0.02\n").start()
    send(d, b"<13>age: old one", b"<13>age: old two")
    wait_stored(d, 2)
    old_t = query(d)[-1]["time"]
    wait_for(lambda: time.time() > old_t + max_age_s / 2, 5, "the old entries to be half their max age")
    send(d, b"<13>age: young")
    wait_stored(d, 3)
    # Between the old ones' max age and the young one's, only the young one is left.
    assert wait_for(lambda: [e["message"] for e in query(d)] == ["young"], 10, "the old entries to age out")
    assert time.time() >= old_t + max_age_s
    wait_for(lambda: query(d) == [], 10, "the young entry to age out too")
    st = status(d)["store"]
    assert (st["entries"], st["deleted"]) == (0, 3)


# --- restart, stop, crash ---------------------------------------------------------------------------------


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


def test_store_from_a_newer_ipcd_stops_startup(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd()
    d.state_dir.mkdir(parents=True)
    conn = sqlite3.connect(str(d.state_dir / "ipcd.db"))
    try:
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()
    d.start(wait=False)
    assert d.wait() == 1
    assert (
        f"cannot open the store {d.state_dir / 'ipcd.db'}: store schema version 99 is newer than this ipcd knows"
        in d.stderr()
    )


# --- logs.query -------------------------------------------------------------------------------------------


def test_logs_query_pages_forward_in_id_order(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, *[b"<13>%s: m%d" % (b"odd" if i % 2 else b"even", i) for i in range(1, 26)])
    wait_stored(d, 25)

    def ids(**params: Any) -> list[int]:
        return [e["id"] for e in query(d, **params)]

    assert ids() == list(range(1, 26))  # default limit 100
    assert ids(limit=10) == list(range(16, 26))  # the newest, in id order
    pages, after = [], 0
    while page := ids(limit=10, after_id=after):
        pages.append(page)
        after = page[-1]
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert ids(limit=5, after_id=10, ident="odd") == [11, 13, 15, 17, 19]
    assert ids(limit=3, ident="odd") == [21, 23, 25]
    for bad in (
        {"limit": 0},
        {"limit": 10001},
        {"after_id": -1},
        {"priority": "loud"},
        {"since": "soonish"},
        {"grep": "(unclosed"},
        {"pid": "one"},
        {"colour": "red"},
    ):
        err = d.call("logs.query", bad)
        assert err["code"] == -32602, (bad, err)
    assert len(query(d, limit=10000)) == 25


@needs_root
def test_non_admin_sees_only_its_own_entries(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config='[control]\nsocket_mode = "0666"\n').start()
    send(d, b"<13>root: secret")

    def child() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>mine: from nobody", d.log_sock)
        with Conn(d.sock) as c:
            wait_for(lambda: c.call("logs.query")["entries"], 10, "nobody's entry")
            own = c.call("logs.query", {})
            other = c.call("logs.query", {"uid": 0})
        return 0, json.dumps([own, other])

    code, out = run_as(65534, 65534, child)
    assert code == 0, out
    own, other = json.loads(out)
    assert [e["message"] for e in own["entries"]] == ["from nobody"]
    assert (other["code"], other["data"]["required_role"]) == (-32001, "admin")
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "logs"))
    assert code == 0 and "from nobody" in out and "secret" not in out
    assert [e["message"] for e in query(d)] == ["secret", "from nobody"]  # root sees both


# --- logs.follow --------------------------------------------------------------------------------------------


def test_follow_backlog_then_live_with_filters(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, b"<14>app: one", b"<11>app: two", b"<11>other: three", b"<10>app: four", b"<15>app: five")
    wait_stored(d, 5)
    with d.conn() as everything, d.conn() as errors, d.conn() as fresh:
        assert everything.call("logs.follow", {"backlog": 3}) == {"following": True, "backlog": 3}
        res = errors.call("logs.follow", {"backlog": 10, "ident": "app", "priority": "err"})
        assert res == {"following": True, "backlog": 2}
        assert fresh.call("logs.follow", {"grep": "six|seven"}) == {"following": True, "backlog": 0}
        send(d, b"<11>app: six", b"<14>app: seven", b"<11>other: eight")
        assert entry_ids(notes(everything, 6)) == [3, 4, 5, 6, 7, 8]
        assert [m["params"]["message"] for m in notes(errors, 3)] == ["two", "four", "six"]
        got = notes(fresh, 2)
        assert [m["params"]["message"] for m in got] == ["six", "seven"]
        assert got[0]["params"] == query(d, grep="six")[0]  # the same entry shape as logs.query
        # Nothing else was queued for the filtered followers.
        send(d, b"<11>app: nine")
        assert [m["params"]["message"] for m in notes(errors, 1)] == ["nine"]
        assert notes(everything, 1)[0]["params"]["message"] == "nine"


def test_follow_has_no_gap_or_repeat_across_the_backlog(make_ipcd: Callable[..., Ipcd]) -> None:
    # A queue that never overflows: this test is about the boundary, not lag.
    d = make_ipcd(config=f"{NO_LIMIT}[control]\nstream_queue = 1000000\n").start()
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                s.sendto(b"<13>flow: %d" % sent[0], d.log_sock)
                sent[0] += 1

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_for(lambda: status(d)["logs"]["stored"] >= 500, 20, "the flow to start")
        with d.conn() as c:
            # Opened mid-stream: the backlog is read while new commits keep coming.
            assert c.call("logs.follow", {"backlog": 100}) == {"following": True, "backlog": 100}
            at_open = status(d)["logs"]["stored"]
            wait_for(lambda: status(d)["logs"]["stored"] >= at_open + 1000, 20, "1000 more entries")
            stop.set()
            t.join(30)
            wait_stored(d, sent[0])
            ids = []
            while not ids or ids[-1] < sent[0]:
                ids.extend(entry_ids(notes(c, 1)))
    finally:
        stop.set()
        t.join(30)
    assert ids == list(range(ids[0], sent[0] + 1))
    assert ids[0] <= at_open - 99  # the backlog reached back before the follow began


def test_stalled_follower_lags_without_slowing_anyone(make_ipcd: Callable[..., Ipcd]) -> None:
    max_lag = 200
    d = make_ipcd(config=f"{NO_LIMIT}follow_max_lag = {max_lag}\n[control]\nstream_queue = 64\n").start()
    n, chunk = 600, 50
    payload = b"p" * 2000  # the stalled reader's socket buffer fills after some 100 entries
    with d.conn() as stalled, d.conn() as reader:
        assert stalled.call("logs.follow") == {"following": True, "backlog": 0}  # and then it reads nothing
        assert reader.call("logs.follow") == {"following": True, "backlog": 0}
        got: list[int] = []
        for i in range(0, n, chunk):
            send(d, *[b"<13>stall: %d " % j + payload for j in range(i, i + chunk)])
            wait_stored(d, i + chunk)  # intake keeps going
            got.extend(entry_ids(notes(reader, chunk)))  # and the other follower gets each entry
        assert got == list(range(1, n + 1))
        assert [e["id"] for e in query(d, limit=n)] == got  # queries are answered too
        # Now the stalled one reads: what it was sent, then how much it missed, then the
        # newest max_lag entries, read on from the store: it never holds more than that.
        msgs = notes(stalled, 1)
        while msgs[-1]["method"] != "lagged":
            msgs.extend(notes(stalled, 1))
        kept = entry_ids(msgs[:-1])
        assert kept == list(range(1, len(kept) + 1)) and len(kept) < n - max_lag
        missed = msgs[-1]["params"]["missed"]
        assert msgs[-1]["params"] == {"stream": "logs.follow", "missed": missed}
        rest = entry_ids(notes(stalled, n - len(kept) - missed))
        assert rest == list(range(len(kept) + missed + 1, n + 1))
        assert len(kept) + missed + len(rest) == n
        send(d, b"<13>stall: back")  # and it is live again
        assert notes(stalled, 1)[0]["params"]["id"] == n + 1
        assert notes(reader, 1)[0]["params"]["id"] == n + 1


# --- logs.follow under load ----------------------------------------------------------------------------------


def test_follower_that_keeps_reading_misses_nothing_in_a_burst(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config=NO_LIMIT).start()
    n = 5000
    with d.conn() as c:
        assert c.call("logs.follow")["following"] is True
        send(d, *[b"<13>burst: %d" % i for i in range(n)])
        msgs = notes(c, 1)
        while msgs[-1]["method"] == "logs.entry" and msgs[-1]["params"]["id"] < n:
            msgs.extend(notes(c, 1))
    assert entry_ids(msgs) == list(range(1, n + 1))


# --- ipcctl send ------------------------------------------------------------------------------------------------


def test_ipcctl_send(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    for args in (
        ["-p", "local3.err", "-t", "mytag", "hello", "world"],
        ["-p", "warning", "no tag"],
        ["-p", "2", "-t", "num", "by number"],
        ["--priority", "user.info", "--tag", "long", "opts"],
        ["-t", "dflt", "default priority"],
    ):
        res = ipcctl("--socket", d.sock, "send", *args)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), args
    wait_stored(d, 5)
    got = [(e["facility"], e["priority"], e["ident"], e["message"], e["format"]) for e in query(d)]
    assert got == [
        (19, 3, "mytag", "hello world", "rfc3164"),
        (1, 4, getpass.getuser(), "no tag", "rfc3164"),
        (1, 2, "num", "by number", "rfc3164"),
        (1, 6, "long", "opts", "rfc3164"),
        (1, 5, "dflt", "default priority", "rfc3164"),  # user.notice, as logger
    ]
    for e in query(d):
        assert (e["pid"], e["hostname"]) == (None, None)
        assert e["sender_comm"] in ("ipcctl", None)  # None if it exited before ipcd looked (see `alive`)
        assert re.fullmatch(TS_3164, e["timestamp"])


def test_ipcctl_send_reads_stdin_lines(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    res = ipcctl("--socket", d.sock, "send", "-t", "lines", input=b"one\ntwo words\nthree\n")
    assert res.returncode == 0, res.stderr
    wait_stored(d, 3)
    entries = query(d)
    assert [(e["ident"], e["message"]) for e in entries] == [
        ("lines", "one"),
        ("lines", "two words"),
        ("lines", "three"),
    ]
    assert len({e["sender_pid"] for e in entries}) == 1


def test_ipcctl_send_log_socket_option(make_ipcd: Callable[..., Ipcd], short_tmp: Path) -> None:
    d = make_ipcd().start()
    res = ipcctl("--socket", str(short_tmp / "elsewhere.sock"), "send", "--log-socket", d.log_sock, "-t", "o", "hi")
    assert res.returncode == 0, res.stderr
    res = ipcctl("send", "-t", "e", "from env", env={"IPCD_LOG_SOCKET": d.log_sock})
    assert res.returncode == 0, res.stderr
    wait_stored(d, 2)
    assert [e["message"] for e in query(d)] == ["hi", "from env"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-p", "bogus", "x"], 2, "'bogus': use a level (err, 3) or facility.level (local3.err)"),
        (["-p", "8", "x"], 2, "'8': level 0-7, facility 0-23"),
        (["-p", "local8.err", "x"], 2, "'local8.err': use a level"),
        (["-p", "24.err", "x"], 2, "'24.err': level 0-7, facility 0-23"),
        (["-p", "kern.9", "x"], 2, "'kern.9': level 0-7, facility 0-23"),
        (["--log-socket", "/nonexistent/log.sock", "x"], 3, "/nonexistent/log.sock"),
    ],
)
def test_ipcctl_send_bad_input(make_ipcd: Callable[..., Ipcd], args: list[str], code: int, message: str) -> None:
    d = make_ipcd().start()
    res = ipcctl("--socket", d.sock, "send", *args)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert message in res.stderr and "Traceback" not in res.stderr
    assert status(d)["logs"]["received"] == 0


# --- the receiver: recvmmsg(2) and its recvmsg fallback ----------------------------------------------------------


@pytest.mark.parametrize("use_mmsg", [True, False], ids=["recvmmsg", "recvmsg"])
def test_receiver_reads_bursts_with_credentials_and_real_lengths(short_tmp: Path, use_mmsg: bool) -> None:
    path = str(short_tmp / "r.sock")
    cap = 100
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx:
        rx.bind(path)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        receiver = Receiver(rx, cap, vlen=4, use_mmsg=use_mmsg)
        try:
            assert receiver.mmsg is use_mmsg
            assert receiver.read() == []  # nothing queued: no wait
            sizes = [0, 1, cap, cap + 1, 3 * cap, 7]
            for i, size in enumerate(sizes):
                tx.sendto(bytes([65 + i]) * size, path)
            got = receiver.read() + receiver.read()
            assert receiver.read() == []
        finally:
            receiver.close()
    me = (MY_PID, os.getuid(), os.getgid())
    assert got == [(bytes([65 + i]) * min(size, cap), size > cap, *me) for i, size in enumerate(sizes)]


@needs_program("ss")  # iproute2: reads the socket's buffer size
def test_log_socket_gets_the_receive_buffer_asked_for(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[log]\nreceive_buffer_bytes = 3145728\n").start()
    fd_dir = Path(f"/proc/{status(d)['log_process']['pid']}/fd")  # the log process holds the log socket
    inodes = {
        os.readlink(fd_dir / fd)[8:-1] for fd in os.listdir(fd_dir) if os.readlink(fd_dir / fd).startswith("socket:[")
    }
    out = subprocess.run(["ss", "-xam"], capture_output=True, text=True, check=True).stdout
    sizes = [
        int(m.group(2))
        for m in re.finditer(r"^u_dgr\s.*?\s(\d+)\s+\*\s+0\s+skmem:\(r\d+,rb(\d+)", out, re.M)
        if m.group(1) in inodes
    ]
    # The kernel doubles what it is asked for (socket(7), SO_RCVBUF); root may pass rmem_max.
    expected = 2 * 3145728 if os.geteuid() == 0 else None
    assert sizes, out
    assert sizes[0] == expected if expected else sizes[0] > 212992


def test_suppressed_count_is_stored_at_stop(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[log]\nrate_limit_burst = 2\nrate_limit_interval_s = 3600\n").start()
    send(d, *[b"<13>chatty: %d" % i for i in range(7)])
    wait_for(lambda: d.call("status")["logs"]["rate_limited"] == 5, 10, "five messages suppressed")
    assert d.stop() == 0  # the window is still open: the report comes with the stop
    d.start()
    msgs = [e["message"] for e in query(d)]
    assert msgs[:2] == ["0", "1"]  # ident "chatty"
    assert len(msgs) == 3 and msgs[2].startswith("suppressed 5 messages from ")
