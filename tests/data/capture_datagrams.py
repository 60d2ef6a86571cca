"""Capture real log datagrams from real clients into `datagrams.py` (a fixed table).

Not part of the test suite: run it by hand (as root, on Linux) to regenerate
the table that `tests/test_wire_logparse.py` is driven by:

    .venv/bin/python tests/data/capture_datagrams.py [--output PATH]

It binds an AF_UNIX SOCK_DGRAM socket in a temporary directory and records
what each client sends to it:

- util-linux `logger -u SOCK` in its formats (local default, --rfc3164,
  --rfc5424, --octet-count, SD, msgid, UTF-8, multi-line, long tags);
- Python's `logging.handlers.SysLogHandler(address=SOCK)`;
- glibc `syslog(3)` (Python's `syslog` module and a small C program).  glibc
  always writes to /dev/log, so the sender runs in a private mount namespace
  (`unshare --mount`) where /dev/log is bind-mounted onto the capture socket.
  If /dev/log does not exist on the host, an empty file is created as the
  mount point and removed afterwards; nothing else on the host changes;
- raw `sendto` and `socat` of plain text and JSON objects.

`expect` is written from what each client is documented to send (tag, pid,
priority, message...), never by running `ipcd.logparse`: the table is the
reference the parser is checked against.  The values that change from run to
run (claimed timestamps, pids, logger's timeQuality) are taken as captured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import logging.handlers
import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEV_LOG = Path("/dev/log")

C_SENDER = r"""
#include <string.h>
#include <syslog.h>

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "pid") == 0) {
        openlog("csender", LOG_PID | LOG_NDELAY, LOG_LOCAL0);
        syslog(LOG_WARNING, "hello from C with LOG_PID");
    } else if (strcmp(mode, "nopid") == 0) {
        openlog("csender", LOG_NDELAY, LOG_LOCAL0);
        syslog(LOG_INFO, "hello from C without LOG_PID");
    } else {
        /* no openlog: glibc uses program_invocation_short_name, facility user */
        syslog(LOG_NOTICE, "hello from C without openlog");
    }
    closelog();
    return 0;
}
"""

PY_SYSLOG_SENDER = (
    "import syslog\n"
    "syslog.openlog('pysys', syslog.LOG_PID, syslog.LOG_DAEMON)\n"
    "syslog.syslog(syslog.LOG_ERR, 'hello from the python syslog module')\n"
)

LONG_TAG = "t" * 200  # logger accepts it for RFC 3164; RFC 3164 §4.1.3 says 32, rsyslog/journald take it whole
TAG_48 = "a" * 48  # RFC 5424 §6.2.5 APP-NAME is at most 48 (logger --rfc5424 refuses more)


class Capture:
    """One datagram socket; `take()` returns what arrived since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)

    def take(self, expected: int = 1, timeout_s: float = 2.0) -> list[bytes]:
        got: list[bytes] = []
        self.sock.settimeout(timeout_s)
        while len(got) < expected:
            try:
                got.append(self.sock.recv(1 << 17))
            except TimeoutError:
                break
        # Anything extra means the client sent more than one datagram: say so.
        self.sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(self.sock.recv(1 << 17))
        return got

    def close(self) -> None:
        self.sock.close()


def run(argv: list[str], stdin: bytes | None = None) -> int:
    """Run a sender to completion; return its pid (the claimed pid it may write)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
    proc.communicate(stdin)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with {proc.returncode}: {argv}")
    return proc.pid


@contextlib.contextmanager
def dev_log_mount_point() -> Iterator[None]:
    """Make sure /dev/log exists as a mount point; undo only what we did."""
    created = False
    if not os.path.lexists(DEV_LOG):
        DEV_LOG.touch()
        created = True
    try:
        yield
    finally:
        if created:
            DEV_LOG.unlink()


def in_private_dev_log(sock: Path, argv: list[str]) -> list[str]:
    # unshare without --fork execs sh, and sh execs the sender: one pid throughout.
    script = 'mount --bind "$1" /dev/log && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(sock), *argv]


def login_name() -> str:
    # util-linux logger's default tag: getlogin(), else the euid's name (logger.c xgetlogin).
    try:
        return os.getlogin()
    except OSError:
        return pwd.getpwuid(os.geteuid()).pw_name


# What the claimed timestamp looks like in each form: taken as captured.
def ts_3164(dgram: bytes) -> str:
    m = re.match(rb"(?:\d+ )?<\d+>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ", dgram)
    assert m, dgram
    return m.group(1).decode()


def ts_5424(dgram: bytes) -> str:
    m = re.match(rb"(?:\d+ )?<\d+>1 (\S+) ", dgram)
    assert m, dgram
    return m.group(1).decode()


def time_quality(dgram: bytes) -> dict[str, str]:
    # logger adds [timeQuality tzKnown="1" isSynced="0|1" (syncAccuracy="N")]: what it says depends on the clock.
    m = re.search(rb'\[timeQuality((?: \w+="[^"]*")*)\]', dgram)
    assert m, dgram
    return {k.decode(): v.decode() for k, v in re.findall(rb'(\w+)="([^"]*)"', m.group(1))}


def expect(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": None,
        "priority": None,
        "facility": None,
        "ident": None,
        "pid": None,
        "hostname": None,
        "msgid": None,
        "timestamp": None,
        "structured_data": None,
        "fields": None,
        "message": None,
        "malformed": False,
    }
    base.update(kw)
    return base


def capture_all(cap: Capture, workdir: Path) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    sock = str(cap.path)
    user = login_name()
    host = socket.gethostname()
    host_3164 = host.split(".")[0]  # logger --rfc3164 sends the short name

    def add(client: str, dgram: bytes, **kw: Any) -> None:
        table.append({"client": client, "datagram": dgram, "expect": expect(**kw)})

    def one(sender: Callable[[], int | None]) -> tuple[bytes, int | None]:
        pid = sender()
        got = cap.take()
        if len(got) != 1:
            raise SystemExit(f"expected one datagram, got {len(got)}: {got!r}")
        return got[0], pid

    def logger(*args: str, stdin: bytes | None = None) -> tuple[bytes, int | None]:
        return one(lambda: run(["logger", "-u", sock, *args], stdin))

    # --- util-linux logger ---------------------------------------------------
    d, _ = logger("hello from logger")
    add(
        "logger default",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=user,
        timestamp=ts_3164(d),
        message="hello from logger",
    )

    d, _ = logger("--rfc3164", "hello rfc3164")
    add(
        "logger --rfc3164",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=user,
        hostname=host_3164,
        timestamp=ts_3164(d),
        message="hello rfc3164",
    )

    d, _ = logger("--rfc5424", "hello rfc5424")
    add(
        "logger --rfc5424",
        d,
        format="rfc5424",
        priority=5,
        facility=1,
        ident=user,
        hostname=host,
        timestamp=ts_5424(d),
        structured_data={"timeQuality": time_quality(d)},
        message="hello rfc5424",
    )

    d, _ = logger("--octet-count", "hello octet count")
    add(
        "logger --octet-count",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=user,
        timestamp=ts_3164(d),
        message="hello octet count",
    )

    d, _ = logger("--octet-count", "--rfc5424", "hello octet count rfc5424")
    add(
        "logger --octet-count --rfc5424",
        d,
        format="rfc5424",
        priority=5,
        facility=1,
        ident=user,
        hostname=host,
        timestamp=ts_5424(d),
        structured_data={"timeQuality": time_quality(d)},
        message="hello octet count rfc5424",
    )

    # A message that ends in a newline: logger counts (and sends) the newline too.
    d, _ = logger("--octet-count", "trailing newline\n")
    add(
        "logger --octet-count trailing newline",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=user,
        timestamp=ts_3164(d),
        message="trailing newline",
    )

    d, pid = logger("-t", "TAG", "-i", "-p", "local3.err", "tagged with pid")
    add(
        "logger -t TAG -i -p local3.err",
        d,
        format="rfc3164",
        priority=3,
        facility=19,
        ident="TAG",
        pid=pid,
        timestamp=ts_3164(d),
        message="tagged with pid",
    )

    d, _ = logger("--rfc5424=notq,notime,nohost", "bare rfc5424")
    add(
        "logger --rfc5424=notq,notime,nohost",
        d,
        format="rfc5424",
        priority=5,
        facility=1,
        ident=user,
        message="bare rfc5424",
    )

    d, _ = logger(
        "--rfc5424",
        "--sd-id",
        "zoo@123",
        "--sd-param",
        'tiger="hungry"',
        "--sd-param",
        r'note="say \"hi\" \\ [x\]"',
        "with structured data",
    )
    add(
        "logger --rfc5424 --sd-id zoo@123",
        d,
        format="rfc5424",
        priority=5,
        facility=1,
        ident=user,
        hostname=host,
        timestamp=ts_5424(d),
        structured_data={"timeQuality": time_quality(d), "zoo@123": {"tiger": "hungry", "note": 'say "hi" \\ [x]'}},
        message="with structured data",
    )

    d, pid = logger("--rfc5424", "--msgid", "ID47", "-i", "-p", "daemon.warning", "with msgid")
    add(
        "logger --rfc5424 --msgid ID47 -i",
        d,
        format="rfc5424",
        priority=4,
        facility=3,
        ident=user,
        pid=pid,
        hostname=host,
        msgid="ID47",
        timestamp=ts_5424(d),
        structured_data={"timeQuality": time_quality(d)},
        message="with msgid",
    )

    # --msgid only exists in RFC 5424: with the default format logger drops it.
    d, _ = logger("--msgid", "ID47", "msgid ignored")
    assert b"ID47" not in d, d
    add(
        "logger --msgid (local format)",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=user,
        timestamp=ts_3164(d),
        message="msgid ignored",
    )

    d, _ = logger("grüße ✓")
    add(
        "logger utf-8", d, format="rfc3164", priority=5, facility=1, ident=user, timestamp=ts_3164(d), message="grüße ✓"
    )

    d, _ = logger("--rfc5424", "grüße ✓")
    add(
        "logger --rfc5424 utf-8",
        d,
        format="rfc5424",
        priority=5,
        facility=1,
        ident=user,
        hostname=host,
        timestamp=ts_5424(d),
        structured_data={"timeQuality": time_quality(d)},
        message="grüße ✓",
    )

    # Multi-line: from stdin logger sends one datagram per line (checked here), so
    # only a message given as an argument arrives as one multi-line datagram.
    run(["logger", "-u", sock, "-t", "stdin"], b"line one\nline two\n")
    per_line = cap.take(expected=2)
    if len(per_line) != 2:
        raise SystemExit(f"logger stdin: expected one datagram per line, got {per_line!r}")
    d, _ = logger("line one\nline two")
    add(
        "logger multi-line argument",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=user,
        timestamp=ts_3164(d),
        message="line one\nline two",
    )

    d, _ = logger("-t", LONG_TAG, "long tag")
    add(
        "logger -t <200-char tag>",
        d,
        format="rfc3164",
        priority=5,
        facility=1,
        ident=LONG_TAG,
        timestamp=ts_3164(d),
        message="long tag",
    )

    d, _ = logger("--rfc5424", "-t", TAG_48, "long app-name")
    add(
        "logger --rfc5424 -t <48-char tag>",
        d,
        format="rfc5424",
        priority=5,
        facility=1,
        ident=TAG_48,
        hostname=host,
        timestamp=ts_5424(d),
        structured_data={"timeQuality": time_quality(d)},
        message="long app-name",
    )

    # --- Python logging.handlers.SysLogHandler ---------------------------------
    def handler_send(configure: Callable[[logging.handlers.SysLogHandler], None], level: int, msg: str) -> bytes:
        handler = logging.handlers.SysLogHandler(address=sock)
        configure(handler)
        log = logging.getLogger(f"capture.{len(table)}")
        log.propagate = False
        log.setLevel(logging.DEBUG)
        log.addHandler(handler)
        try:
            log.log(level, msg)
        finally:
            log.removeHandler(handler)
            handler.close()
        got = cap.take()
        assert len(got) == 1, got
        return got[0]

    d = handler_send(lambda h: None, logging.WARNING, "disk almost full")
    add("SysLogHandler", d, format="rfc3164", priority=4, facility=1, message="disk almost full")

    def with_ident(h: logging.handlers.SysLogHandler) -> None:
        h.ident = f"pyapp[{os.getpid()}]: "
        h.facility = h.LOG_LOCAL5

    d = handler_send(with_ident, logging.ERROR, "handler with ident")
    add(
        "SysLogHandler ident",
        d,
        format="rfc3164",
        priority=3,
        facility=21,
        ident="pyapp",
        pid=os.getpid(),
        message="handler with ident",
    )

    def no_nul(h: logging.handlers.SysLogHandler) -> None:
        h.append_nul = False

    d = handler_send(no_nul, logging.INFO, "no trailing NUL")
    add("SysLogHandler append_nul=False", d, format="rfc3164", priority=6, facility=1, message="no trailing NUL")

    # --- glibc syslog(3), through /dev/log in a private mount namespace -------
    csrc = workdir / "csender.c"
    csrc.write_text(C_SENDER)
    cbin = workdir / "csender"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(cbin), str(csrc)], check=True)

    with dev_log_mount_point():
        d, pid = one(lambda: run(in_private_dev_log(cap.path, [sys.executable, "-c", PY_SYSLOG_SENDER])))
        add(
            "python syslog module (glibc)",
            d,
            format="rfc3164",
            priority=3,
            facility=3,
            ident="pysys",
            pid=pid,
            timestamp=ts_3164(d),
            message="hello from the python syslog module",
        )

        d, pid = one(lambda: run(in_private_dev_log(cap.path, [str(cbin), "pid"])))
        add(
            "C syslog LOG_PID|LOG_NDELAY (glibc)",
            d,
            format="rfc3164",
            priority=4,
            facility=16,
            ident="csender",
            pid=pid,
            timestamp=ts_3164(d),
            message="hello from C with LOG_PID",
        )

        d, _ = one(lambda: run(in_private_dev_log(cap.path, [str(cbin), "nopid"])))
        add(
            "C syslog without LOG_PID (glibc)",
            d,
            format="rfc3164",
            priority=6,
            facility=16,
            ident="csender",
            timestamp=ts_3164(d),
            message="hello from C without LOG_PID",
        )

        d, _ = one(lambda: run(in_private_dev_log(cap.path, [str(cbin)])))
        add(
            "C syslog without openlog (glibc)",
            d,
            format="rfc3164",
            priority=5,
            facility=1,
            ident=cbin.name,
            timestamp=ts_3164(d),
            message="hello from C without openlog",
        )

    # --- raw datagrams: sendto and socat ------------------------------------
    def sendto(payload: bytes) -> int:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(payload, sock)
        return 0

    def socat(payload: bytes) -> int:
        return run(["socat", "-u", "STDIN", f"UNIX-SENDTO:{sock}"], payload)

    d, _ = one(lambda: sendto(b"just some plain text"))
    add("sendto plain text", d, format="plain", priority=5, facility=1, message="just some plain text")

    d, _ = one(lambda: socat(b"plain text via socat\n"))
    add("socat plain text", d, format="plain", priority=5, facility=1, message="plain text via socat")

    doc: dict[str, Any] = {
        "message": "json with numeric priority",
        "priority": 3,
        "ident": "jsonapp",
        "fields": {"user": "alice", "attempt": 2},
    }
    d, _ = one(lambda: sendto(json.dumps(doc).encode()))
    add(
        "sendto JSON priority number",
        d,
        format="json",
        priority=3,
        facility=1,
        ident="jsonapp",
        message="json with numeric priority",
        fields={"user": "alice", "attempt": 2},
    )

    doc = {
        "message": "json with named priority",
        "priority": "warning",
        "facility": "local2",
        "ident": "jsonapp",
        "pid": 4242,
        "request_id": "r-17",
        "fields": {"path": "/srv/ünï", "ok": False},
    }
    d, _ = one(lambda: socat(json.dumps(doc, ensure_ascii=False).encode() + b"\n"))
    add(
        "socat JSON priority name",
        d,
        format="json",
        priority=4,
        facility=18,
        ident="jsonapp",
        pid=4242,
        message="json with named priority",
        fields={"request_id": "r-17", "path": "/srv/ünï", "ok": False},
    )

    d, _ = one(lambda: sendto(b'{"message": "only a message"}'))
    add("sendto JSON message only", d, format="json", priority=6, facility=1, message="only a message", fields=None)

    return table


def render(table: list[dict[str, Any]]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    logger_version = subprocess.run(["logger", "--version"], capture_output=True, text=True).stdout.strip()
    libc = " ".join(platform.libc_ver())
    lines = [
        '"""Datagrams captured from real clients (generated by capture_datagrams.py: do not edit by hand).',
        "",
        f"Captured {now} on {platform.system()} {platform.release()} with {logger_version}, {libc},",
        f"Python {platform.python_version()}.  Timestamps, pids and timeQuality are as captured.",
        '"""',
        "",
        "from typing import Any",
        "",
        "DATAGRAMS: list[dict[str, Any]] = [",
    ]
    for row in table:
        lines.append("    {")
        lines.append(f"        {'client'!r}: {row['client']!r},")
        lines.append(f"        {'datagram'!r}: {row['datagram']!r},")
        lines.append(f"        {'expect'!r}: {{")
        for key, value in row["expect"].items():
            lines.append(f"            {key!r}: {value!r},")
        lines.append("        },")
        lines.append("    },")
    lines.append("]")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "datagrams.py")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: glibc senders need a private mount namespace")
    for tool in ("logger", "gcc", "socat", "unshare", "mount"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    with tempfile.TemporaryDirectory(prefix="ipcd-capture-") as tmp:
        cap = Capture(Path(tmp) / "log.sock")
        try:
            table = capture_all(cap, Path(tmp))
        finally:
            cap.close()
    clients = [row["client"] for row in table]
    assert len(set(clients)) == len(clients), "client names are test ids: keep them unique"
    args.output.write_text(render(table), encoding="utf-8")
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.exists():
        subprocess.run([str(ruff), "format", "--quiet", str(args.output)], check=False)
    print(f"{len(table)} datagrams -> {args.output}")


if __name__ == "__main__":
    main()
