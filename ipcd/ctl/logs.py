"""`ipcctl logs` and `ipcctl send`: reading the log as journalctl does, writing it as logger does.

`logs` asks the control socket (`logs.query`, `logs.follow`) and prints in
journalctl's short, verbose or JSON forms; `send` writes RFC 3164 datagrams
straight to the log socket.  Priority names are `wire.priority`'s, the same
for both.
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from ipcd.client import resolve_log_socket, send_datagram
from ipcd.ctl.common import Opts, emit_json, pass_opts
from ipcd.wire.priority import FACILITY_NAMES, SEVERITY_NAMES, parse_priority


def fmt_short(e: dict[str, Any], hostname: str) -> str:
    """Like a syslog line: "Nov 27 10:30:20 host ident[pid]: message" (journalctl -o short)."""
    when = time.strftime("%b %d %H:%M:%S", time.localtime(e["time"]))
    ident = e.get("ident") or e.get("sender_comm") or "-"
    pid = e.get("pid") if e.get("pid") is not None else e.get("sender_pid")
    who = f"{ident}[{pid}]" if pid else ident
    msg = e["message"] + (" [truncated]" if e.get("truncated") else "")
    return f"{when} {e.get('hostname') or hostname} {who}: {msg}"


def fmt_verbose(e: dict[str, Any]) -> str:
    t = e["time"]
    head = time.strftime("%a %Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"
    lines = [f"{head} {time.strftime('%Z', time.localtime(t))} [id {e['id']}]"]
    prio, fac = e["priority"], e["facility"]
    lines.append(f"    PRIORITY={prio} ({SEVERITY_NAMES[prio]})")
    fac_name = FACILITY_NAMES[fac] if fac < len(FACILITY_NAMES) else "?"
    lines.append(f"    FACILITY={fac} ({fac_name})")
    for key in (
        "ident",
        "pid",
        "hostname",
        "msgid",
        "timestamp",
        "format",
        "truncated",
        "sender_pid",
        "sender_uid",
        "sender_gid",
        "sender_comm",
    ):
        if e.get(key) is not None:
            lines.append(f"    {key.upper()}={e[key]}")
    for key in ("structured_data", "fields"):
        if e.get(key):
            lines.append(f"    {key.upper()}={json.dumps(e[key], ensure_ascii=False)}")
    lines.append(f"    MESSAGE={e['message']}")
    return "\n".join(lines)


def entry_printer(output: str) -> Callable[[dict[str, Any]], None]:
    hostname = socket.gethostname()
    if output == "json":
        return lambda e: click.echo(json.dumps(e, ensure_ascii=False))
    if output == "verbose":
        return lambda e: click.echo(fmt_verbose(e))
    return lambda e: click.echo(fmt_short(e, hostname))


@click.command()
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(0, 10000),
    default=None,
    help="How many of the newest entries [50; 10 with -f].",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries as they are stored.")
@click.option("-p", "--priority", metavar="PRIO", help="This level and more severe: 0-7 or emerg..debug.")
@click.option("-t", "--identifier", "ident", metavar="IDENT", help="Only this ident (syslog tag).")
@click.option("--pid", type=click.IntRange(min=0), help="Only this sender's (trusted) pid.")
@click.option("--since", metavar="TIME", help="2026-11-27 10:00, -5m, -2h, today, yesterday...")
@click.option("--until", metavar="TIME", help="As --since.")
@click.option("-g", "--grep", metavar="PATTERN", help="Messages matching this regular expression (smart case).")
@click.option("-o", "--output", type=click.Choice(["short", "json", "verbose"]), default="short", show_default=True)
@pass_opts
def logs(
    opts: Opts,
    count: int | None,
    follow: bool,
    priority: str | None,
    ident: str | None,
    pid: int | None,
    since: str | None,
    until: str | None,
    grep: str | None,
    output: str,
) -> None:
    """Show the log, newest last, like journalctl."""
    filters: dict[str, Any] = {
        k: v
        for k, v in (
            ("priority", priority),
            ("ident", ident),
            ("pid", pid),
            ("since", since),
            ("until", until),
            ("grep", grep),
        )
        if v is not None
    }
    show = entry_printer("json" if opts.json else output)
    if not follow:
        n = 50 if count is None else count
        entries = opts.call("logs.query", {**filters, "limit": n})["entries"] if n else []
        if opts.json:
            emit_json(entries)  # one document; -o json gives a line per entry
            return
        for e in entries:
            show(e)
        return
    with opts.client(timeout_s=None) as c:
        c.timeout_s = opts.timeout_s
        c.call("logs.follow", {**filters, "backlog": 10 if count is None else count})
        for note in c.notifications():
            if note["method"] == "logs.entry":
                show(note["params"])
            elif note["method"] == "lagged":
                click.echo(f"-- {note['params']['missed']} entries missed: this reader fell behind --", err=True)


@click.command()
@click.option(
    "-p",
    "--priority",
    "prio",
    default="user.notice",
    show_default=True,
    metavar="PRIO",
    help="A level, or facility.level as logger -p.",
)
@click.option("-t", "--tag", metavar="TAG", help="The ident [your user name].")
@click.option("--log-socket", metavar="PATH", help="The log socket [log.sock beside the control socket].")
@click.argument("message", nargs=-1)
@pass_opts
def send(opts: Opts, prio: str, tag: str | None, log_socket: str | None, message: tuple[str, ...]) -> None:
    """Send MESSAGE to the log socket, as logger does (no MESSAGE: each line of stdin)."""
    try:
        fac, sev = parse_priority(prio)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    try:
        tag = tag or getpass.getuser()
    except (KeyError, OSError):
        tag = tag or "ipcctl"
    path = resolve_log_socket(log_socket, opts.socket, opts.user)
    lines = [" ".join(message)] if message else [line.rstrip("\n") for line in sys.stdin]
    for text in lines:
        stamp = time.strftime("%b %e %H:%M:%S")
        send_datagram(f"<{fac * 8 + sev}>{stamp} {tag}: {text}".encode(), path)
