"""`ipcctl`: how a person talks to ipcd.

Human output by default, one JSON document with `--json` (JSON lines when
streaming).  Exit codes (DESIGN.md "ipcctl"): 0 ok, 1 the daemon answered
with an error, 2 usage, 3 daemon unreachable, 4 permission denied (by the
socket file or the daemon's -32001).  Every expected failure is a
`click.ClickException` carrying its exit code and a message that says what
to do; no traceback reaches the user.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from ipcd import __version__, client
from ipcd.client import AccessDenied, Client, PermissionDenied, RemoteError, Unreachable
from ipcd.wire.priority import FACILITY_NAMES, SEVERITY_NAMES, parse_priority

EXIT_DAEMON_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_PERMISSION = 4


class CliError(click.ClickException):
    exit_code = EXIT_DAEMON_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"ipcctl: {self.format_message()}", err=True)


class DaemonError(CliError):
    exit_code = EXIT_DAEMON_ERROR


class UnreachableError(CliError):
    exit_code = EXIT_UNREACHABLE


class PermissionError_(CliError):
    exit_code = EXIT_PERMISSION


def to_cli_error(e: Exception) -> CliError:
    if isinstance(e, Unreachable):
        return UnreachableError(str(e))
    if isinstance(e, AccessDenied):
        return PermissionError_(str(e))
    if isinstance(e, PermissionDenied):
        role = e.required_role or "admin"
        hint = "use sudo" if role == "admin" else "ask for the role in the [access] config"
        return PermissionError_(f"{e.message}: {hint}")
    if isinstance(e, RemoteError):
        return DaemonError(f"error {e.code}: {e.message}")
    raise e


class IpcctlGroup(click.Group):
    """Turns the client's exceptions into exit codes, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Unreachable, AccessDenied, RemoteError) as e:
            raise to_cli_error(e) from None
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)  # `ipcctl logs | head`


class Opts:
    def __init__(self, socket: str | None, user: bool, as_json: bool, timeout_s: float) -> None:
        self.socket = socket
        self.user = user
        self.json = as_json
        self.timeout_s = timeout_s

    def client(self, timeout_s: float | None = -1.0) -> Client:
        return Client(self.socket, self.timeout_s if timeout_s == -1.0 else timeout_s, self.user)

    def call(self, method: str, params: Any = None) -> Any:
        with self.client() as c:
            return c.call(method, params)


pass_opts = click.make_pass_decorator(Opts)


@click.group(cls=IpcctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ipcctl")
@click.option("--socket", "socket_path", metavar="PATH", help="Control socket [default: see README].")
@click.option("--user", is_flag=True, help="Talk to the user instance ($XDG_RUNTIME_DIR/ipcd).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.001),
    default=10.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for an answer.",
)
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, user: bool, as_json: bool, timeout_s: float) -> None:
    """Talk to ipcd: status, logs, key/value state, channels."""
    ctx.obj = Opts(socket_path, user, as_json, timeout_s)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


# -- status --------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if d or h:
        parts.append(f"{h}h")
    if d or h or m:
        parts.append(f"{m}m")
    parts.append(f"{s}s")
    return "".join(parts)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def render_status(st: dict[str, Any]) -> list[str]:
    conns = st["connections"]
    req = st["requests"]
    lines = [
        f"ipcd {st['version']}, pid {st['pid']}, up {fmt_duration(st['uptime_s'])}, activation: {st['activation']}",
        f"  control   {st['sockets'].get('control', '-')}",
    ]
    if "log" in st["sockets"]:
        lines.append(f"  log       {st['sockets']['log']}")
    lines.append(
        f"  clients   {conns['active']} connected, {conns['total']} since start, "
        f"{conns.get('refused', 0)} refused (max {conns.get('max', '?')})"
    )
    lines.append(f"  requests  {req['total']} total, {req['errors']} errors")
    for name, render in SECTION_RENDERERS.items():
        if name in st:
            lines.append(render(st[name]))
    return lines


def _render_logs(lg: dict[str, Any]) -> str:
    return (
        f"  logs      {lg['received']} received, {lg['stored']} stored, {lg['rate_limited']} rate-limited, "
        f"{lg['truncated']} truncated, {lg['malformed']} malformed, {lg['dropped']} dropped"
    )


def _render_store(sto: dict[str, Any]) -> str:
    line = f"  store     {sto['path']}, {fmt_bytes(sto['bytes'])}, {sto['entries']} entries"
    if sto.get("error"):
        line += f"\n            FAILING: {sto['error']}"
    return line


def _render_watchdog(wd: dict[str, Any]) -> str:
    if not wd.get("enabled"):
        return "  watchdog  off (no WATCHDOG_USEC)"
    state = "healthy" if wd.get("healthy") else f"UNHEALTHY: {wd.get('problem')}"
    return f"  watchdog  every {wd['interval_s']:g} s, {state}"


def _render_kv(kv: dict[str, Any]) -> str:
    return f"  kv        {kv['keys']} keys, {kv.get('watchers', 0)} watchers"


def _render_channels(ch: dict[str, Any]) -> str:
    return (
        f"  channels  {ch['channels']} channels, {ch['subscribers']} subscribers, "
        f"{ch['published']} published, {ch['lagged']} lagged"
    )


SECTION_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "logs": _render_logs,
    "store": _render_store,
    "kv": _render_kv,
    "channels": _render_channels,
    "watchdog": _render_watchdog,
}


@cli.command()
@pass_opts
def status(opts: Opts) -> None:
    """Show what ipcd is doing."""
    st = opts.call("status")
    if opts.json:
        emit_json(st)
    else:
        click.echo("\n".join(render_status(st)))


# -- ping ----------------------------------------------------------------------


@cli.command()
@click.option("-c", "--count", type=click.IntRange(min=1), default=1, show_default=True, help="Pings to send.")
@click.option(
    "-i",
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    metavar="S",
    help="Seconds between pings.",
)
@pass_opts
def ping(opts: Opts, count: int, interval_s: float) -> None:
    """Round-trip times to the daemon, like ping(8)."""
    rtts: list[float] = []
    with opts.client() as c:
        if not opts.json:
            click.echo(f"PING {c.path}")
        for seq in range(1, count + 1):
            t0 = time.perf_counter()
            c.call("ping")
            rtt = (time.perf_counter() - t0) * 1000.0
            rtts.append(rtt)
            if not opts.json:
                click.echo(f"reply from {c.path}: seq={seq} time={rtt:.3f} ms")
            if seq < count and interval_s:
                time.sleep(interval_s)  # the pace ping(8) keeps, not a wait for a condition
    mean = sum(rtts) / len(rtts)
    mdev = math.sqrt(sum((r - mean) ** 2 for r in rtts) / len(rtts))
    if opts.json:
        emit_json({"count": count, "rtt_ms": {"min": min(rtts), "avg": mean, "max": max(rtts), "mdev": mdev}})
        return
    click.echo(f"--- {c.path} ping statistics ---")
    click.echo(f"{count} requests, {len(rtts)} replies, 0% loss")
    click.echo(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{mean:.3f}/{max(rtts):.3f}/{mdev:.3f} ms")


# -- raw call, admin -------------------------------------------------------------


def parse_json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint=what) from None


@cli.command()
@click.argument("method")
@click.argument("params", required=False)
@pass_opts
def call(opts: Opts, method: str, params: str | None) -> None:
    """Call METHOD with PARAMS (a JSON object or array) and print the result."""
    value = parse_json_arg(params, "PARAMS") if params is not None else None
    if value is not None and not isinstance(value, (dict, list)):
        raise click.BadParameter("must be a JSON object or array", param_hint="PARAMS")
    result = opts.call(method, value)
    click.echo(json.dumps(result, ensure_ascii=False, indent=None if opts.json else 2))


@cli.command()
@pass_opts
def shutdown(opts: Opts) -> None:
    """Stop the daemon (it drains and exits as on SIGTERM)."""
    result = opts.call("shutdown")
    emit_json(result) if opts.json else click.echo(f"ipcd (pid {result['pid']}) is stopping")


@cli.command()
@pass_opts
def reload(opts: Opts) -> None:
    """Re-read the config; returns when it is applied (or refused)."""
    result = opts.call("reload")
    if opts.json:
        emit_json(result)
    elif result.get("config_exists"):
        click.echo(f"reloaded {result['config']}")
    else:
        click.echo(f"reloaded: defaults (no {result.get('config') or 'config file'})")


@cli.command()
@pass_opts
def clients(opts: Opts) -> None:
    """List the live control connections."""
    rows = opts.call("clients")["clients"]
    if opts.json:
        emit_json(rows)
        return
    click.echo(f"{'PID':>8} {'UID':>6} {'ROLE':<6} {'REQUESTS':>8}  {'SINCE':<19}  COMMAND")
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["connected_at"]))
        me = " (this ipcctl)" if r.get("self") else ""
        click.echo(f"{r['pid']:>8} {r['uid']:>6} {r['role']:<6} {r['requests']:>8}  {since:<19}  {r['command']}{me}")


# -- logs ------------------------------------------------------------------------


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
    import socket as _socket

    hostname = _socket.gethostname()
    if output == "json":
        return lambda e: click.echo(json.dumps(e, ensure_ascii=False))
    if output == "verbose":
        return lambda e: click.echo(fmt_verbose(e))
    return lambda e: click.echo(fmt_short(e, hostname))


@cli.command()
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


@cli.command()
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
    import getpass

    try:
        fac, sev = parse_priority(prio)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    try:
        tag = tag or getpass.getuser()
    except (KeyError, OSError):
        tag = tag or "ipcctl"
    path = client.resolve_log_socket(log_socket, opts.socket, opts.user)
    lines = [" ".join(message)] if message else [line.rstrip("\n") for line in sys.stdin]
    for text in lines:
        stamp = time.strftime("%b %e %H:%M:%S")
        client.send_datagram(f"<{fac * 8 + sev}>{stamp} {tag}: {text}".encode(), path)


def main() -> None:
    cli(prog_name="ipcctl")


# Commands kept in modules of their own register themselves on the group.
from ipcd.ctl import doctor  # noqa: E402, I001
from ipcd.ctl import ipc as cli_ipc  # noqa: E402, I001

cli_ipc.register(cli)
doctor.register(cli)

if __name__ == "__main__":
    main()
