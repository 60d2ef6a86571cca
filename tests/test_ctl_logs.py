"""`ipcd.ctl.logs`: `ipcctl logs` as a journalctl user types it, and `ipcctl send`, against a live ipcd.

Flags, output modes, colours, pager, follow.  Colours and the pager are only
for a terminal: those tests run ipcctl on a real pty.  Tests that need the
daemon's newer `logs.query` params (priority ranges, lists of idents,
`before_id`) say so in their docstring.
"""

from __future__ import annotations

import datetime as dt
import errno
import getpass
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Ipcd, ipcctl, ipcctl_argv, needs_program
from helpers_ctl import streaming
from helpers_logs import HOSTNAME, MY_COMM, MY_PID, NO_LIMIT, TS_3164, alive, query, send, status, wait_stored

RED, YELLOW, BOLD, GREY = "\x1b[0;1;31m", "\x1b[0;1;33m", "\x1b[0;1;39m", "\x1b[0;38;5;245m"


@pytest.fixture(scope="module")
def corpus() -> Iterator[tuple[Ipcd, list[dict[str, Any]], dict[str, int]]]:
    """A daemon with six known entries, in two batches apart in time: (daemon, entries, sender pids)."""
    root = Path(tempfile.mkdtemp(prefix="ipcd-", dir="/tmp"))
    os.chmod(root, 0o755)  # other uids must reach the sockets
    d = Ipcd(root, NO_LIMIT)
    try:
        d.start()
        pids = {}
        for n, (name, args, line) in enumerate(
            [
                ("web1", ["-t", "web", "-p", "user.info"], b"GET /index 200\n"),
                ("web2", ["-t", "web", "-p", "user.err"], b"Disk ERROR on sda\n"),
                ("db", ["-t", "db", "-i", "-p", "daemon.warning"], b"disk error on sdb\n"),
            ],
            1,
        ):
            with alive(["logger", "-u", d.log_sock, *args]) as (proc, write):
                write(line)
                wait_stored(d, n)  # while the sender lives, so that its command name is known
                pids[name] = proc.pid
        send(d, b"<10>kern: crit thing", b"<15>web: debug noise", b"<11>Disk full")
        wait_stored(d, 6)
        yield d, query(d), pids
        assert d.stop() == 0
    finally:
        d.kill()
        shutil.rmtree(root, ignore_errors=True)


def logs_cli(d: Ipcd, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return ipcctl("--socket", d.sock, "logs", *args, env=env)


def messages(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert res.returncode == 0, res.stderr
    return [line.split(": ", 1)[1] for line in res.stdout.splitlines()]


def short(e: dict[str, Any]) -> str:
    """journalctl -o short: "Nov 27 10:30:20 host ident[pid]: message", the host and pid trusted ones."""
    when = time.strftime("%b %d %H:%M:%S", time.localtime(e["time"]))
    ident = e["ident"] or e["sender_comm"]
    return f"{when} {HOSTNAME} {ident}[{e['sender_pid']}]: {e['message']}"


ALL = ["GET /index 200", "Disk ERROR on sda", "disk error on sdb", "crit thing", "debug noise", "Disk full"]


@needs_program("logger")  # the corpus is sent with logger
def test_short_output_shows_the_trusted_pid(corpus: Any) -> None:
    d, entries, pids = corpus
    res = logs_cli(d)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [short(e) for e in entries]
    assert res.stdout.splitlines()[0].endswith(f" web[{pids['web1']}]: GET /index 200")
    assert res.stdout.splitlines()[5].endswith(f" {MY_COMM}[{MY_PID}]: Disk full")  # no tag: the command's name
    assert logs_cli(d, "-o", "short").stdout == res.stdout
    assert "\x1b" not in res.stdout  # piped: no colours


@needs_program("logger")  # the corpus is sent with logger
def test_short_iso_precise_and_cat(corpus: Any) -> None:
    d, entries, _ = corpus
    e = entries[0]
    iso = logs_cli(d, "-o", "short-iso", "-g", "GET").stdout
    stamp = dt.datetime.fromtimestamp(e["time"]).astimezone().isoformat(timespec="seconds")
    assert iso == f"{stamp} {HOSTNAME} web[{e['sender_pid']}]: GET /index 200\n"
    precise = logs_cli(d, "-o", "short-precise", "-n", "1", "-t", "db").stdout
    db = entries[2]
    when = time.strftime("%b %d %H:%M:%S", time.localtime(db["time"])) + f".{int(db['time'] % 1 * 1e6):06d}"
    assert precise == f"{when} {HOSTNAME} db[{db['sender_pid']}]: disk error on sdb\n"
    assert logs_cli(d, "-o", "cat").stdout.splitlines() == ALL


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ALL),
        (["-n", "2"], ALL[-2:]),
        (["--lines", "5"], ALL[-5:]),
        (["-n", "10000"], ALL),
        (["-n", "all"], ALL),
        (["-n", "20000"], ALL),
        (["-r"], ALL[::-1]),
        (["-r", "-n", "2"], ALL[:-3:-1]),
        (["--reverse", "-n", "all"], ALL[::-1]),
        (["-p", "err"], ["Disk ERROR on sda", "crit thing", "Disk full"]),
        (["-p", "3"], ["Disk ERROR on sda", "crit thing", "Disk full"]),
        (["--priority", "crit"], ["crit thing"]),
        (["-p", "warning", "-n", "2"], ["crit thing", "Disk full"]),
        (["-t", "web"], ["GET /index 200", "Disk ERROR on sda", "debug noise"]),
        (["--identifier", "db"], ["disk error on sdb"]),
        (["-t", "nobody"], []),
        (["-g", "error"], ["Disk ERROR on sda", "disk error on sdb"]),
        (["-g", "ERROR"], ["Disk ERROR on sda"]),
        (["--grep", "Disk"], ["Disk ERROR on sda", "Disk full"]),
        (["-g", "^disk"], ["Disk ERROR on sda", "disk error on sdb", "Disk full"]),
        (["-g", "disk", "-t", "web", "-p", "err"], ["Disk ERROR on sda"]),
        (["--uid", "0"], ALL if os.geteuid() == 0 else []),
        (["--uid", "root"], ALL if os.geteuid() == 0 else []),
        (["--since", "-5m"], ALL),
        (["-S", "5 min ago"], ALL),
        (["--until", "-5m"], []),
        (["-U", "1h ago"], []),
        (["--since", "today"], ALL),
        (["--until", "yesterday"], []),
        (["--since", "+1h"], []),
        (["--since", "2001-01-01 00:00", "--until", "2001-12-31"], []),
        (["--since", "@0", "--until", "now"], ALL),
    ],
)
@needs_program("logger")  # the corpus is sent with logger
def test_filters(corpus: Any, args: list[str], expected: list[str]) -> None:
    d, _, _ = corpus
    assert messages(logs_cli(d, *args)) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-p", "warning..err"], ["Disk ERROR on sda", "disk error on sdb", "Disk full"]),
        (["-p", "err..warning"], ["Disk ERROR on sda", "disk error on sdb", "Disk full"]),
        (["-p", "info.."], ["GET /index 200", "debug noise"]),
        (["-p", "..crit"], ["crit thing"]),
        (["-p", "6..7"], ["GET /index 200", "debug noise"]),
        (["-t", "web", "-t", "db"], ["GET /index 200", "Disk ERROR on sda", "disk error on sdb", "debug noise"]),
        (["-t", "db", "-t", "nobody"], ["disk error on sdb"]),
    ],
)
@needs_program("logger")  # the corpus is sent with logger
def test_ranges_and_several_idents(corpus: Any, args: list[str], expected: list[str]) -> None:
    """Needs the daemon's priority ranges and lists of idents (logs.query)."""
    d, _, _ = corpus
    assert messages(logs_cli(d, *args)) == expected


@needs_program("logger")  # the corpus is sent with logger
def test_n_0_prints_nothing(corpus: Any) -> None:
    d, _, _ = corpus
    res = logs_cli(d, "-n", "0")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@needs_program("logger")  # the corpus is sent with logger
def test_pid_is_the_senders(corpus: Any) -> None:
    d, _, pids = corpus
    assert messages(logs_cli(d, "--pid", str(pids["db"]))) == ["disk error on sdb"]
    assert messages(logs_cli(d, "--pid", str(MY_PID))) == ["crit thing", "debug noise", "Disk full"]
    assert messages(logs_cli(d, "--pid", "1")) == []


@needs_program("logger")  # the corpus is sent with logger
def test_since_until_iso_and_epoch(corpus: Any) -> None:
    d, entries, _ = corpus
    # The two batches were stored apart: cut between them, in local time as journalctl reads it.
    assert entries[2]["time"] < entries[3]["time"]
    cut = dt.datetime.fromtimestamp((entries[2]["time"] + entries[3]["time"]) / 2)
    iso = cut.isoformat(sep=" ")
    assert messages(logs_cli(d, "--since", iso)) == ALL[3:]
    assert messages(logs_cli(d, "--until", iso)) == ALL[:3]
    assert messages(logs_cli(d, "--since", cut.astimezone(dt.UTC).isoformat())) == ALL[3:]
    # Epoch seconds as systemd.time(7) writes them; both ends inclusive.
    lo, hi = entries[1]["time"], entries[2]["time"]
    got = messages(logs_cli(d, "--since", f"@{lo!r}", "--until", f"@{hi!r}"))
    assert got == [e["message"] for e in entries if lo <= e["time"] <= hi]
    assert got[0] in ALL[:2] and got[-1] == ALL[2]


@needs_program("logger")  # the corpus is sent with logger
def test_json_json_pretty_and_verbose(corpus: Any) -> None:
    d, entries, pids = corpus
    res = logs_cli(d, "-o", "json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line) for line in res.stdout.splitlines()] == entries  # one entry per line
    pretty = logs_cli(d, "-o", "json-pretty", "-n", "2").stdout
    assert json.loads("[" + pretty.replace("}\n{", "},\n{") + "]") == entries[-2:]
    res = logs_cli(d, "-o", "verbose", "-n", "1", "-t", "db")
    assert res.returncode == 0, res.stderr
    e = entries[2]
    head, *fields = res.stdout.splitlines()
    assert head.endswith(f" [id {e['id']}]")
    assert head.startswith(time.strftime("%a %Y-%m-%d %H:%M:%S", time.localtime(e["time"])))
    assert fields == [
        "    PRIORITY=4 (warning)",
        "    FACILITY=3 (daemon)",
        "    IDENT=db (claimed)  SENDER_COMM=logger (trusted)",
        f"    PID={pids['db']} (claimed)  SENDER_PID={pids['db']} (trusted)",
        f"    TIMESTAMP={e['timestamp']} (claimed)",
        f"    SENDER_UID={os.geteuid()} (trusted)",
        f"    SENDER_GID={os.getegid()} (trusted)",
        "    FORMAT=rfc3164",
        "    TRUNCATED=False",
        "    MESSAGE=disk error on sdb",
    ]


@needs_program("logger")  # the corpus is sent with logger
def test_global_json_is_one_document(corpus: Any) -> None:
    d, entries, _ = corpus
    res = ipcctl("--socket", d.sock, "--json", "logs", "-n", "2")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == entries[-2:]
    assert json.loads(ipcctl("--socket", d.sock, "--json", "logs", "-n", "all").stdout) == entries


@pytest.mark.parametrize(
    ("args", "flag", "message"),
    [
        (["-n", "-1"], "'-n' / '--lines'", "not a count"),
        (["-n", "many"], "'-n' / '--lines'", "not a count"),
        (["--pid", "abc"], "'--pid'", "not a valid integer"),
        (["--pid", "-3"], "'--pid'", "not in the range 0<=x"),
        (["--uid", "no-such-user-here"], "'--uid'", "neither a uid nor a user name"),
        (["-o", "xml"], "'-o' / '--output'", "'xml' is not one of"),
        (["--colour"], None, "No such option '--colour'"),
        (["-p", "loud"], "'-p' / '--priority'", "'loud': use a level"),
        (["-p", "8"], "'-p' / '--priority'", "'8': use a level"),
        (["-p", ".."], "'-p' / '--priority'", "a range needs at least one end"),
        (["-p", "err..loud"], "'-p' / '--priority'", "use a level"),
        (["-u", "a b"], "'-u' / '--unit'", "not a unit name"),
        (["--since", "soonish"], "'-S' / '--since'", "not a time: 'soonish'"),
        (["--until", "25:99"], "'-U' / '--until'", "not a time: '25:99'"),
        (["--since", "Tue 2026-11-30"], "'-S' / '--since'", "is a Monday"),
        (["--since", "@1e400"], "'-S' / '--since'", "out of range"),
        (["-g", "(unclosed"], "'-g' / '--grep'", "bad regular expression"),
        (["-f", "-r"], None, "-f and -r cannot go together"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_flag(
    corpus: Any, args: list[str], flag: str | None, message: str
) -> None:
    d, _, _ = corpus
    res = logs_cli(d, *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    if flag is not None:
        assert f"Invalid value for {flag}" in res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr and "-32602" not in res.stderr


def test_unreachable_exits_3(short_tmp: Path) -> None:
    res = ipcctl("--socket", str(short_tmp / "nothing.sock"), "logs")
    assert res.returncode == 3
    assert str(short_tmp / "nothing.sock") in res.stderr


# --- paging through the store ---------------------------------------------------------------------


def test_all_and_large_n_page_through_the_store(make_ipcd: Callable[..., Ipcd]) -> None:
    """More than one page (10000): -n all forward with after_id; -n N and -r with before_id (the daemon's)."""
    d = make_ipcd(config=NO_LIMIT).start()
    n = 10050
    send(d, *[b"<13>p: %d" % i for i in range(n)])
    wait_stored(d, n, 30)
    got = messages(logs_cli(d, "-n", "all", "-o", "short"))
    assert got == [str(i) for i in range(n)]
    assert logs_cli(d, "-n", "all", "-o", "cat", "-g", "^100[0-9]$").stdout.split() == [
        str(i) for i in range(1000, 1010)
    ]
    assert logs_cli(d, "-n", "10020", "-o", "cat").stdout.split() == [str(i) for i in range(30, n)]
    assert logs_cli(d, "-r", "-n", "10020", "-o", "cat").stdout.split() == [str(i) for i in range(n - 1, 29, -1)]
    assert logs_cli(d, "-r", "-n", "all", "-o", "cat").stdout.split() == [str(i) for i in range(n - 1, -1, -1)]


# --- on a terminal: colours and the pager ---------------------------------------------------------


def on_pty(argv: list[str], env: dict[str, str], timeout_s: float = 20.0) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a new pty; (exit code, all it wrote)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError as e:  # EIO: every writer of the pty has gone
                    assert e.errno == errno.EIO
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None and not select.select([master], [], [], 0)[0]:
                break
        return proc.wait(10), out.decode(errors="replace").replace("\r\n", "\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def tty_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "PAGER", "LESS")}
    return {**env, "TERM": "xterm", "PAGER": "cat", **extra}


@needs_program("logger")  # the corpus is sent with logger
def test_colours_by_priority_on_a_terminal_only(corpus: Any) -> None:
    d, _, _ = corpus
    code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs"), tty_env())
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith(": GET /index 200")  # info: plain
    assert lines[1].endswith(f": {RED}Disk ERROR on sda\x1b[0m")  # err
    assert lines[2].endswith(f": {YELLOW}disk error on sdb\x1b[0m")  # warning
    assert lines[3].endswith(f": {RED}crit thing\x1b[0m")
    assert lines[4].endswith(f": {GREY}debug noise\x1b[0m")
    assert lines[5].endswith(f": {RED}Disk full\x1b[0m")
    code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs"), tty_env(NO_COLOR="1"))
    assert code == 0 and "\x1b" not in out and "Disk full" in out
    code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs", "-o", "json"), tty_env())
    assert code == 0 and "\x1b" not in out  # JSON stays JSON
    assert "\x1b" not in logs_cli(d).stdout  # piped


def test_notice_is_bold(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, b"<13>n: a notice")
    wait_stored(d, 1)
    code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs", "-o", "cat"), tty_env())
    assert code == 0 and out == f"{BOLD}a notice\x1b[0m\n", out


@needs_program("logger")  # the corpus is sent with logger
def test_pager_on_a_terminal_unless_no_pager_or_follow(corpus: Any, short_tmp: Path) -> None:
    d, _, _ = corpus
    paged = short_tmp / "paged"
    script = short_tmp / "pager.sh"  # a pager that keeps what it was given
    script.write_text(f"#!/bin/sh\ncat > {paged}\n")
    script.chmod(0o755)
    pager = str(script)
    code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs", "-o", "cat"), tty_env(PAGER=pager))
    assert code == 0, out
    assert paged.read_text().splitlines()[:2] == ["GET /index 200", f"{RED}Disk ERROR on sda\x1b[0m"]  # coloured
    assert "GET /index" not in out
    paged.unlink()
    code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs", "-o", "cat"), tty_env(PAGER=pager, NO_COLOR="1"))
    assert code == 0 and paged.read_text().splitlines() == ALL
    paged.unlink()
    no_pager = ipcctl_argv("--socket", d.sock, "logs", "-o", "cat", "--no-pager")
    code, out = on_pty(no_pager, tty_env(PAGER=pager, NO_COLOR="1"))
    assert code == 0 and not paged.exists() and out.splitlines() == ALL
    assert logs_cli(d, "-o", "cat", env={"PAGER": pager}).stdout.splitlines() == ALL  # piped: no pager
    assert not paged.exists()


def test_hostile_entries_reach_a_terminal_escaped(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(
        d,
        b"<14>evil: \x1b]0;pwned\x07 \x1b]52;c;ZXZpbA==\x07 \x1b[2J ok\rFAILED\x08\x08 txt\xe2\x80\xaecod.sh",
        b"<14>evil: disk ok\nNov 30 12:00:00 host sshd[1]: Accepted password for root from 10.0.0.1",
        b'{"message": "json \\u009b31m \\u2066x\\u2069", "ident": "evil\\u001b[31m"}',
    )
    wait_stored(d, 3)
    for output in ("short", "short-iso", "short-precise", "cat", "verbose", "json", "json-pretty"):
        code, out = on_pty(ipcctl_argv("--socket", d.sock, "logs", "-o", output), tty_env(NO_COLOR="1"))
        assert code == 0, out
        for raw in ("\x1b", "\x07", "\x08", "\u202e", "\x9b", "\u2066", "\r"):
            assert raw not in out.replace("\r\n", "\n"), (output, raw, out)
        forged = [line for line in out.splitlines() if "sshd[1]: Accepted" in line]
        if output.startswith("json"):
            assert len(forged) == 1 and "disk ok\\nNov 30" in forged[0], (output, out)  # one JSON string
        else:
            assert len(forged) == 1 and forged[0].startswith(" "), (output, out)  # indented: part of an entry
    short_out = logs_cli(d, "-o", "short").stdout
    assert "evil: \\x1b]0;pwned\\x07 \\x1b]52;c;ZXZpbA==\\x07 \\x1b[2J ok\\rFAILED\\x08\\x08 txt\\u202ecod.sh" in (
        short_out.replace(f"evil[{MY_PID}]", "evil")
    )
    assert f"evil\\x1b[31m[{MY_PID}]: json \\x9b31m \\u2066x\\u2069" in short_out


# --- follow ---------------------------------------------------------------------------------------


def test_follow(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, *[b"<13>f: before %d" % i for i in range(12)], b"<13>g: old g", b"<11>f: old err")
    wait_stored(d, 14)
    with (
        streaming("--socket", d.sock, "logs", "-f") as all_lines,
        streaming("--socket", d.sock, "logs", "-f", "-n", "1", "-t", "g", "-o", "json") as tagged,
        streaming("--socket", d.sock, "--json", "logs", "--follow", "-n", "1", "-p", "err") as errors,
    ):
        # As journalctl -f: the last 10 (or -n) first; once they are out, the follower is live.
        assert [all_lines.out.next().split(": ", 1)[1] for _ in range(10)] == (
            [f"before {i}" for i in range(4, 12)] + ["old g", "old err"]
        )
        assert json.loads(tagged.out.next())["message"] == "old g"
        assert json.loads(errors.out.next())["message"] == "old err"
        send(d, b"<13>g: live one", b"<11>f: live two", b"<11>g: live three")
        live = [all_lines.out.next() for _ in range(3)]
        assert live == [short(e) for e in query(d, limit=3)]
        assert [json.loads(tagged.out.next())["message"] for _ in range(2)] == ["live one", "live three"]
        assert [json.loads(errors.out.next())["message"] for _ in range(2)] == ["live two", "live three"]


def test_follow_more_than_a_backlog_holds(make_ipcd: Callable[..., Ipcd]) -> None:
    """-f -n N past logs.follow's largest backlog (10000), and -f -n all: every one of them, then the live ones,
    even when they lie further back than follow_max_lag ids (which count the entries the filter leaves out)."""
    d = make_ipcd(NO_LIMIT + "follow_max_lag = 100\n").start()
    total = 10_050
    send(d, *[b"<13>f: old %d" % i for i in range(total)], *[b"<13>other: %d" % i for i in range(300)])
    wait_stored(d, total + 300)
    with (
        streaming("--socket", d.sock, "logs", "-f", "-n", "10020", "-t", "f", "-o", "cat") as some,
        streaming("--socket", d.sock, "logs", "-f", "-n", "all", "-t", "f", "-o", "cat") as every,
    ):
        assert [some.out.next() for _ in range(10_020)] == [f"old {i}" for i in range(30, total)]
        assert [every.out.next() for _ in range(total)] == [f"old {i}" for i in range(total)]
        send(d, b"<13>f: live")
        assert (some.out.next(), every.out.next()) == ("live", "live")


# --- ipcctl send ----------------------------------------------------------------------------------


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
