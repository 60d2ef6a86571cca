"""`ipcctl logs` and `ipcctl send`: reading the log as journalctl does, writing it as logger does.

`logs` takes journalctl's flags with their meanings (`logparams` reads
them, `timespec` the times, `logfmt` renders the entries); it asks the
control socket with `logs.query`, a page of at most 10000 entries at a
time (`after_id` forward, `before_id` backward), and `logs.follow`.  On a
terminal it pages (click's pager: `$PAGER`, else less with -R) unless `-f`
or `--no-pager`, and colours by priority unless `NO_COLOR` is set; piped,
it is plain.  `logs -f` survives a daemon restart (`streaming`): it resumes
after the last id it printed, with no gap and no duplicate.

`send` writes RFC 3164 datagrams straight to the log socket.
"""

from __future__ import annotations

import collections
import getpass
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import click

from ipcd.client import Client, InvalidParams, resolve_log_socket, send_datagram
from ipcd.ctl.common import Opts, pass_opts
from ipcd.ctl.completion import complete_priorities, complete_units
from ipcd.ctl.escape import json_text
from ipcd.ctl.logfmt import OUTPUTS, Entry, Formatter
from ipcd.ctl.logparams import LinesParam, PatternParam, PriorityParam, UidParam, UnitParam
from ipcd.ctl.streaming import note, run_stream, until_interrupted
from ipcd.ctl.timespec import TimeParam
from ipcd.wire.priority import parse_priority

PAGE = 10000  # logs.query's largest limit
DEFAULT_LINES = 50
DEFAULT_FOLLOW_LINES = 10
# The flag that set each param, to name it when the daemon refuses a value.
FLAGS = {
    "priority": "-p",
    "ident": "-t",
    "unit": "-u",
    "uid": "--uid",
    "pid": "--pid",
    "grep": "-g",
    "since": "--since",
    "until": "--until",
    "limit": "-n",
}


def use_color() -> bool:
    """Colours on a terminal, unless NO_COLOR (no-color.org) or TERM=dumb."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


# -- reading the store a page at a time ---------------------------------------------


def _page(c: Client, filters: dict[str, Any], **extra: Any) -> list[Entry]:
    return c.call("logs.query", {**filters, **extra})["entries"]  # type: ignore[no-any-return]


def oldest_first(c: Client, filters: dict[str, Any], after_id: int = 0) -> Iterator[Entry]:
    """Every matching entry after `after_id`, in id order, a page at a time."""
    while True:
        page = _page(c, filters, after_id=after_id, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after_id = page[-1]["id"]


def newest_first(c: Client, filters: dict[str, Any], n: int | None) -> Iterator[Entry]:
    """The newest `n` matching entries (None: all), newest first, a page at a time."""
    before: int | None = None
    while n is None or n > 0:
        limit = PAGE if n is None else min(n, PAGE)
        page = _page(c, filters, limit=limit, **({} if before is None else {"before_id": before}))
        yield from reversed(page)
        if len(page) < limit:
            return
        before = page[0]["id"]
        n = None if n is None else n - len(page)


def select(c: Client, filters: dict[str, Any], n: int | None, reverse: bool) -> Iterator[Entry]:
    """What `logs -n N [-r]` shows: the newest `n` (None: all), oldest first unless `reverse`."""
    if reverse:
        return newest_first(c, filters, n)
    if n is None:
        return oldest_first(c, filters)
    if n <= PAGE:
        return iter(_page(c, filters, limit=n) if n else [])
    oldest = collections.deque(newest_first(c, filters, n), maxlen=1)  # walk back to the n-th newest
    if not oldest:
        return iter(())
    return itertools.islice(oldest_first(c, filters, oldest[0]["id"] - 1), n)


# -- the command ----------------------------------------------------------------------


def _filters(
    priority: int | str | None,
    idents: tuple[str, ...],
    units: tuple[str, ...],
    uid: int | None,
    pid: int | None,
    grep: str | None,
    since: float | None,
    until: float | None,
) -> dict[str, Any]:
    """logs.query's params; one ident or unit as a string, several as a list."""
    f: dict[str, Any] = {}
    for name, value in (("priority", priority), ("uid", uid), ("pid", pid), ("grep", grep)):
        if value is not None:
            f[name] = value
    for name, values in (("ident", idents), ("unit", units)):
        if values:
            f[name] = values[0] if len(values) == 1 else list(dict.fromkeys(values))
    for name, when in (("since", since), ("until", until)):
        if when is not None:
            f[name] = when
    return f


def _as_usage_error(e: InvalidParams) -> click.UsageError:
    """A value the daemon refused, said as a usage error (exit 2) that names the flag."""
    flag = FLAGS.get(e.param or "")
    if flag is None:
        return click.UsageError(e.message)
    return click.BadParameter(e.message, param_hint=f"'{flag}'")


def _print_all(lines: Iterable[str], pager: bool, color: bool) -> None:
    """Each line (no newline of its own), through a pager when stdin and stdout are a terminal."""
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return  # nothing to page
    if pager and sys.stdin.isatty() and sys.stdout.isatty():
        # As journalctl: less quits on a short output, shows colours, chops long lines, Ctrl-C quits.
        os.environ.setdefault("LESS", "FRSXMK")
        click.echo_via_pager(itertools.chain([first], ("\n" + line for line in it)), color=color)  # it ends in "\n"
        return
    click.echo(first)
    for line in it:
        click.echo(line)


def _emit_json_list(entries: Iterable[Entry]) -> None:
    """`--json`: one JSON document (a list), written as it comes."""
    out = sys.stdout
    out.write("[")
    for i, e in enumerate(entries):
        out.write(("," if i else "") + json_text(e))
    out.write("]\n")


def _follow(opts: Opts, fmt: Formatter, filters: dict[str, Any], n: int | None) -> None:
    """The newest `n` (None: all), then every entry as it is stored, until Ctrl-C."""
    last = {"id": 0}  # the last id shown, or the newest id when we started

    def handle(e: dict[str, Any]) -> bool:
        if e.get("lagged"):
            note(f"-- {e.get('missed', '?')} entries missed: this reader fell behind --")
            return True
        last["id"] = max(last["id"], e["id"])
        click.echo(fmt.render(e))
        return True

    def start(c: Client, reconnected: bool) -> Iterable[Any]:
        if reconnected:  # everything after what we showed, then the live ones
            try:
                return c.logs(follow=True, **filters, after_id=last["id"])
            except InvalidParams as e:
                if e.param != "after_id":
                    raise
                note("this ipcd cannot resume a follow (no after_id): entries stored meanwhile may be missing")
                return c.logs(follow=True, **filters)
        newest = _page(c, {}, limit=1)
        last["id"] = newest[-1]["id"] if newest else 0
        if n is not None and n <= PAGE:
            return c.logs(follow=True, **filters, backlog=n)
        # More than logs.follow's backlog holds: those first, a page at a time as `logs -n N` reads
        # them, then a follow from the last one (or from the newest id there was, if later). A follow
        # from further back would skip ahead past `follow_max_lag` ids, which count every entry.
        for entry in select(c, filters, n, reverse=False):
            handle(entry)
        return c.logs(follow=True, **filters, after_id=last["id"])

    until_interrupted(lambda: run_stream(opts, start, handle))


@click.command()
@click.option("-n", "--lines", "count", type=LinesParam(), help="The newest N entries, or all [50; 10 with -f].")
@click.option("-f", "--follow", is_flag=True, help="Then print new entries as they are stored.")
@click.option("-r", "--reverse", is_flag=True, help="Newest first.")
@click.option(
    "-p",
    "--priority",
    type=PriorityParam(),
    shell_complete=complete_priorities,
    help="This level and more severe (0-7, emerg..debug), or FROM..TO.",
)
@click.option(
    "-t",
    "--identifier",
    "idents",
    type=str,
    multiple=True,
    metavar="IDENT",
    help="This ident (syslog tag); repeat for any of several.",
)
@click.option(
    "-u",
    "--unit",
    "units",
    type=UnitParam(),
    shell_complete=complete_units,
    multiple=True,
    help="The sender's systemd unit (sshd: sshd.service); repeatable.",
)
@click.option("--uid", type=UidParam(), help="The sender's (trusted) uid or user name.")
@click.option("--pid", type=click.IntRange(min=0, max=2**31 - 1), help="The sender's (trusted) pid.")
@click.option("-g", "--grep", type=PatternParam(), help="Messages matching this RE2 expression (smart case).")
@click.option("-S", "--since", type=TimeParam(), help="2026-11-30 12:00, today, yesterday, -1h, '1h ago', @EPOCH...")
@click.option("-U", "--until", type=TimeParam(), help="As --since.")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="short", show_default=True, help="The output mode.")
@click.option("--no-pager", is_flag=True, help="Do not pipe the output into a pager.")
@pass_opts
def logs(
    opts: Opts,
    count: int | None | str,
    follow: bool,
    reverse: bool,
    priority: int | str | None,
    idents: tuple[str, ...],
    units: tuple[str, ...],
    uid: int | None,
    pid: int | None,
    grep: str | None,
    since: float | None,
    until: float | None,
    output: str,
    no_pager: bool,
) -> None:
    """Show the log, as journalctl does: the newest 50 entries, oldest first."""
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("count") is not click.core.ParameterSource.DEFAULT
    n: int | None = count if given else (DEFAULT_FOLLOW_LINES if follow else DEFAULT_LINES)  # type: ignore[assignment]
    if follow and reverse:
        raise click.UsageError("-f and -r cannot go together (as in journalctl)")
    filters = _filters(priority, idents, units, uid, pid, grep, since, until)
    fmt = Formatter("json" if opts.json else output, color=use_color() and not opts.json)
    try:
        if follow:
            _follow(opts, fmt, filters, n)
            return
        with opts.client() as c:
            entries = select(c, filters, n, reverse)
            if opts.json:
                _emit_json_list(entries)
            else:
                _print_all((fmt.render(e) for e in entries), not no_pager, fmt.color)
    except InvalidParams as e:
        raise _as_usage_error(e) from None


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
