"""`ipcd.logs.intake` end to end: datagrams from real clients, through a real ipcd, read back.

Datagrams come from util-linux `logger -u`, Python's `SysLogHandler`, a raw
`sendto`, JSON and `socat`; they are read back with `logs.query`.  What the
kernel says of the sender is kept apart from what the datagram claims.
Counters in `status` are checked exactly.  Nothing waits by sleeping:
`wait_for` polls with a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Ipcd, ipcctl, needs_program, needs_root, run_as, wait_for
from helpers_logs import (
    HOSTNAME,
    MY_COMM,
    MY_PID,
    NO_LIMIT,
    TS_3164,
    alive,
    only,
    query,
    run,
    send,
    status,
    wait_stored,
)

from ipcd import procfs


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


# --- real clients, each form ----------------------------------------------------------------------


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


# --- trusted and claimed --------------------------------------------------------------------------


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


# --- bad bytes, truncation, counters --------------------------------------------------------------


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
        "senders": 1,
        "senders_shared": 0,
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
        "senders": 0,
        "senders_shared": 0,
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
        "senders": 1,
        "senders_shared": 0,
        "followers": 0,
    }
    assert st["store"]["entries"] == 4
    files = sum(os.stat(db + s).st_size for s in ("", "-wal", "-shm") if os.path.exists(db + s))
    assert st["store"]["bytes"] == files
    res = ipcctl("--socket", d.sock, "status")
    assert res.returncode == 0, res.stderr
    assert "  logs      5 received, 4 stored, 0 rate-limited, 1 truncated, 2 malformed, 0 dropped" in res.stdout
    assert f"  store     {db}, " in res.stdout and ", 4 entries" in res.stdout
