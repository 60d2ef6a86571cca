"""`ipcctl status`, `ping`, `call`, `shutdown`, `reload`, `clients`: the daemon itself.

Human output by default, one JSON document with the global `--json`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import click

from ipcd.ctl.common import Opts, emit_json, fmt_bytes, fmt_duration, parse_json_arg, pass_opts
from ipcd.ctl.forward import render_forward


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


SECTION_RENDERERS: dict[str, Callable[[Any], str]] = {
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
    click.echo(json.dumps(result, ensure_ascii=False, indent=None if opts.json else 2))


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
