"""`ipcctl status`, `ping`, `call`, `shutdown`, `reload`, `clients`: the daemon itself.

Human output by default, one JSON document with the global `--json`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import click

from ipcd.ctl.common import Opts, emit_json, fmt_bytes, fmt_duration, parse_json_arg, pass_opts
from ipcd.ctl.escape import escape, json_text
from ipcd.ctl.forward import render_forward


def render_status(st: dict[str, Any]) -> list[str]:
    """`status` for a person: each section the daemon sent, none it did not."""
    conns = st["connections"]
    req = st["requests"]
    lines = [
        f"ipcd {escape(str(st['version']))}, pid {st['pid']}, up {fmt_duration(st['uptime_s'])}, "
        f"activation: {escape(str(st['activation']))}",
        f"  control   {escape(str(st['sockets'].get('control', '-')))}",
    ]
    if "log" in st["sockets"]:
        lines.append(f"  log       {escape(str(st['sockets']['log']))}")
    if "config" in st:
        cfg = st["config"]
        shown = "defaults (no config file)" if cfg is None else escape(str(cfg))
        if cfg is not None and st.get("config_exists") is False:
            shown += " (missing: defaults)"
        lines.append(f"  config    {shown}")
    lines.append(
        f"  clients   {conns['active']} connected, {conns['total']} since start, "
        f"{conns.get('refused', 0)} refused (max {conns.get('max', '?')})"
    )
    lines.append(f"  requests  {req['total']} total, {req['errors']} errors")
    for name, render in SECTION_RENDERERS.items():
        if name in st and st[name] is not None:
            lines.append(render(st[name]))
    return lines


def _render_rates(r: dict[str, Any]) -> str:
    parts = []
    if "messages_per_s" in r:
        parts.append(f"{r['messages_per_s']:.1f} messages/s")
    if "requests_per_s" in r:
        parts.append(f"{r['requests_per_s']:.1f} requests/s")
    return f"  rates     {', '.join(parts) or '-'}"


def _render_memory(m: dict[str, Any]) -> str:
    parts = []
    if m.get("rss_bytes") is not None:
        parts.append(f"{fmt_bytes(m['rss_bytes'])} RSS")
    if m.get("log_process_rss_bytes") is not None:
        parts.append(f"log process {fmt_bytes(m['log_process_rss_bytes'])} RSS")
    return f"  memory    {', '.join(parts) or '-'}"


def _render_logs(lg: dict[str, Any]) -> str:
    line = (
        f"  logs      {lg['received']} received, {lg['stored']} stored, {lg['rate_limited']} rate-limited, "
        f"{lg['truncated']} truncated, {lg['malformed']} malformed, {lg['dropped']} dropped"
    )
    if "followers" in lg:
        line += f", {lg['followers']} follower{'' if lg['followers'] == 1 else 's'}"
    return line


def _render_store(sto: dict[str, Any]) -> str:
    line = f"  store     {escape(str(sto['path']))}, {fmt_bytes(sto['bytes'])}, {sto['entries']} entries"
    if sto.get("oldest") is not None:
        line += ", oldest " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sto["oldest"]))
    if sto.get("error"):
        line += f"\n            FAILING: {escape(str(sto['error']))}"
    return line


def _render_watchdog(wd: dict[str, Any]) -> str:
    if not wd.get("enabled"):
        return "  watchdog  off (no WATCHDOG_USEC)"
    state = "healthy" if wd.get("healthy") else f"UNHEALTHY: {escape(str(wd.get('problem')))}"
    return f"  watchdog  every {wd['interval_s']:g} s, {state}"


def _render_kv(kv: dict[str, Any]) -> str:
    return f"  kv        {kv['keys']} keys, {kv.get('watchers', 0)} watchers"


def _render_channels(ch: dict[str, Any]) -> str:
    return (
        f"  channels  {ch['channels']} channels, {ch['subscribers']} subscribers, "
        f"{ch['published']} published, {ch['lagged']} lagged"
    )


SECTION_RENDERERS: dict[str, Callable[[Any], str]] = {
    "rates": _render_rates,
    "memory": _render_memory,
    "logs": _render_logs,
    "store": _render_store,
    "kv": _render_kv,
    "channels": _render_channels,
    "watchdog": _render_watchdog,
    "forward": render_forward,
}


@click.command()
@pass_opts
def status(opts: Opts) -> None:
    """Show what ipcd is doing."""
    st = opts.call("status")
    if opts.json:
        emit_json(st)
    else:
        click.echo("\n".join(render_status(st)))


@click.command()
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
    """Round-trip times to the daemon, like ping(8); Ctrl-C stops it with the summary."""
    rtts: list[float] = []
    sent = 0
    with opts.client() as c:
        path = escape(c.path)
        if not opts.json:
            click.echo(f"PING {path}")
        try:
            while sent < count:
                sent += 1
                t0 = time.perf_counter()
                c.call("ping")
                rtt = (time.perf_counter() - t0) * 1000.0
                rtts.append(rtt)
                if not opts.json:
                    click.echo(f"reply from {path}: seq={sent} time={rtt:.3f} ms")
                if sent < count and interval_s:
                    time.sleep(interval_s)  # the pace ping(8) keeps, not a wait for a condition
        except KeyboardInterrupt:
            sent = len(rtts)  # as ping(8): what was interrupted is not counted as sent
    _ping_summary(opts, path, sent, rtts)


def _ping_summary(opts: Opts, path: str, sent: int, rtts: list[float]) -> None:
    if not rtts:
        if opts.json:
            emit_json({"count": sent, "replies": 0, "rtt_ms": None})
        return
    mean = sum(rtts) / len(rtts)
    mdev = math.sqrt(sum((r - mean) ** 2 for r in rtts) / len(rtts))
    if opts.json:
        rtt = {"min": min(rtts), "avg": mean, "max": max(rtts), "mdev": mdev}
        emit_json({"count": sent, "replies": len(rtts), "rtt_ms": rtt})
        return
    loss = 100.0 * (sent - len(rtts)) / sent if sent else 0.0
    click.echo(f"--- {path} ping statistics ---")
    click.echo(f"{sent} requests, {len(rtts)} replies, {loss:.0f}% loss")
    click.echo(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{mean:.3f}/{max(rtts):.3f}/{mdev:.3f} ms")


@click.command()
@click.argument("method")
@click.argument("params", required=False)
@pass_opts
def call(opts: Opts, method: str, params: str | None) -> None:
    """Call METHOD with PARAMS (a JSON object or array) and print the result."""
    value = parse_json_arg(params, "PARAMS") if params is not None else None
    if value is not None and not isinstance(value, (dict, list)):
        raise click.BadParameter("must be a JSON object or array", param_hint="PARAMS")
    result = opts.call(method, value)
    click.echo(json_text(result, indent=None if opts.json else 2))


@click.command()
@pass_opts
def shutdown(opts: Opts) -> None:
    """Stop the daemon (it drains and exits as on SIGTERM)."""
    result = opts.call("shutdown")
    emit_json(result) if opts.json else click.echo(f"ipcd (pid {result['pid']}) is stopping")


@click.command()
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


@click.command()
@pass_opts
def clients(opts: Opts) -> None:
    """List the live control connections: who, how busy, how idle, and their streams."""
    rows = opts.call("clients")["clients"]
    if opts.json:
        emit_json(rows)
        return
    click.echo(f"{'PID':>8} {'UID':>6} {'ROLE':<6} {'REQUESTS':>8} {'IDLE':>7}  {'SINCE':<19}  COMMAND")
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["connected_at"]))
        idle = fmt_duration(r["idle_s"]) if r.get("idle_s") is not None else "-"
        me = " (this ipcctl)" if r.get("self") else ""
        click.echo(
            f"{r['pid']:>8} {r['uid']:>6} {escape(str(r.get('role', '-'))):<6} {r['requests']:>8} {idle:>7}  "
            f"{since:<19}  {escape(str(r.get('command')))}{me}"
        )
        for st in r.get("streams") or []:
            lag = f"{st.get('queued', 0)} queued, {st.get('dropped', 0)} dropped"
            click.echo(f"{'':>8}   stream {escape(str(st.get('name', '?')))}: {lag}")
