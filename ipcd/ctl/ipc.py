"""`ipcctl kv ...`, `ipcctl publish`, `ipcctl subscribe`: the IPC commands.

    ipcctl kv set KEY VALUE [--json-value] [--ttl S] [--if-version N]
    ipcctl kv get KEY [-v] | kv del KEY | kv ls [PREFIX] | kv watch [PREFIX]
    ipcctl publish CHANNEL MESSAGE [--json-value]
    ipcctl subscribe CHANNEL... [-c N]

Human output by default; with the global `--json`, one JSON document, or
JSON lines for the streams (`kv watch`, `subscribe`).  A stream's `lagged`
notice goes to stderr in both modes, so that stdout holds only messages.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ipcd.ctl.common import Opts, emit_json, fmt_duration, parse_json_arg, pass_opts


def _value_arg(text: str, as_json: bool) -> Any:
    """VALUE as typed (a string), or parsed with --json-value (bad JSON: usage, exit 2)."""
    return parse_json_arg(text, "VALUE") if as_json else text


def show_value(value: Any) -> str:
    """A string as it is; anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _in(seconds: float) -> str:
    return fmt_duration(max(0.0, seconds))


def _lagged(note: dict[str, Any], what: str) -> None:
    click.echo(f"ipcctl: -- {note.get('missed', '?')} {what} missed: this reader fell behind --", err=True)


json_value_opt = click.option("--json-value", is_flag=True, help="Parse VALUE as JSON (default: store the string).")


# -- kv ------------------------------------------------------------------------


@click.group()
def kv() -> None:
    """Shared key/value state: get, set, del, ls, watch."""


@kv.command("get")
@click.argument("key")
@click.option("-v", "--verbose", is_flag=True, help="Also show the version, expiry and who set it.")
@pass_opts
def kv_get(opts: Opts, key: str, verbose: bool) -> None:
    """Print KEY's value (a string as is, else JSON); exit 1 if missing."""
    doc = opts.call("kv.get", {"key": key})
    if opts.json:
        emit_json(doc)
        return
    if not verbose:
        click.echo(show_value(doc["value"]))
        return
    by = doc.get("set_by") or {}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["set_at"]))
    expires = "never" if doc["expires_at"] is None else f"in {_in(doc['expires_at'] - time.time())}"
    click.echo(f"key:     {doc['key']}\nvalue:   {show_value(doc['value'])}\nversion: {doc['version']}")
    click.echo(f"expires: {expires}\nset:     {when} by uid {by.get('uid')} pid {by.get('pid')} ({by.get('command')})")


@kv.command("set")
@click.argument("key")
@click.argument("value")
@json_value_opt
@click.option("--ttl", "ttl_s", type=click.FloatRange(min=0.001), metavar="S", help="Expire after S seconds.")
@click.option(
    "--if-version",
    type=click.IntRange(min=0),
    metavar="N",
    help="Only if KEY is at version N now (0: only if absent); exit 1 if not.",
)
@pass_opts
def kv_set(opts: Opts, key: str, value: str, json_value: bool, ttl_s: float | None, if_version: int | None) -> None:
    """Set KEY to VALUE (a string; any JSON with --json-value)."""
    params: dict[str, Any] = {"key": key, "value": _value_arg(value, json_value)}
    if ttl_s is not None:
        params["ttl_s"] = ttl_s
    if if_version is not None:
        params["if_version"] = if_version
    doc = opts.call("kv.set", params)
    if opts.json:
        emit_json(doc)
        return
    expiry = "" if doc.get("expires_at") is None else f", expires in {_in(doc['expires_at'] - time.time())}"
    click.echo(f"{key}: version {doc['version']}{expiry}")


@kv.command("del")
@click.argument("key")
@pass_opts
def kv_del(opts: Opts, key: str) -> None:
    """Delete KEY; exit 1 if missing."""
    doc = opts.call("kv.delete", {"key": key})
    emit_json(doc) if opts.json else click.echo(f"deleted {key}")


@kv.command("ls")
@click.argument("prefix", default="")
@pass_opts
def kv_ls(opts: Opts, prefix: str) -> None:
    """List the keys that start with PREFIX (all without), one a line."""
    keys = opts.call("kv.list", {"prefix": prefix})["keys"]
    if opts.json:
        emit_json(keys)
    else:
        for k in keys:
            click.echo(k)


count_opt = click.option("-c", "--count", type=click.IntRange(min=1), metavar="N", help="Exit after N.")


@kv.command("watch")
@click.argument("prefix", default="")
@count_opt
@pass_opts
def kv_watch(opts: Opts, prefix: str, count: int | None) -> None:
    """Print each change under PREFIX as it happens (set, delete, expire)."""
    with opts.client() as c:
        changes = c.kv_watch(prefix)
        n = 0
        for change in changes:
            if change.get("lagged"):
                _lagged(change, "changes")
                continue
            if opts.json:
                emit_json(change)
            elif change["op"] == "set":
                click.echo(f"set {change['key']} = {show_value(change['value'])} (version {change['version']})")
            else:
                click.echo(f"{change['op']} {change['key']} (version {change['version']})")
            n += 1
            if count is not None and n >= count:
                return


# -- channels --------------------------------------------------------------------


@click.command()
@click.argument("channel")
@click.argument("message")
@json_value_opt
@pass_opts
def publish(opts: Opts, channel: str, message: str, json_value: bool) -> None:
    """Send MESSAGE (a string; any JSON with --json-value) to CHANNEL's subscribers."""
    doc = opts.call("publish", {"channel": channel, "message": _value_arg(message, json_value)})
    if opts.json:
        emit_json(doc)
    else:
        n = doc["delivered"]
        click.echo(f"delivered to {n} subscriber{'' if n == 1 else 's'}")


@click.command()
@click.argument("channels", metavar="CHANNEL...", nargs=-1, required=True)
@count_opt
@pass_opts
def subscribe(opts: Opts, channels: tuple[str, ...], count: int | None) -> None:
    """Print each message published on CHANNELs: "CHANNEL: MESSAGE", one a line."""
    with opts.client() as c:
        n = 0
        for msg in c.subscribe(channels):
            if msg.get("lagged"):
                _lagged(msg, "messages")
                continue
            if opts.json:
                emit_json(msg)
            else:
                click.echo(f"{msg['channel']}: {show_value(msg['message'])}")
            n += 1
            if count is not None and n >= count:
                return
