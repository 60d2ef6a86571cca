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
from collections.abc import Callable
from typing import Any

import click

from ipcd.client import NotFound, RemoteError
from ipcd.ctl.common import Opts, emit_json, fmt_duration, parse_json_arg, pass_opts
from ipcd.ctl.completion import complete_channels, complete_keys
from ipcd.ctl.escape import escape, escape_lines, json_text, width
from ipcd.ctl.streaming import Handle, run_stream, until_interrupted


def _value_arg(text: str, as_json: bool) -> Any:
    """VALUE as typed (a string), or parsed with --json-value (bad JSON: usage, exit 2)."""
    return parse_json_arg(text, "VALUE") if as_json else text


def _reads_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def show_value(value: Any, indent: str = "") -> str:
    """A value for a person: a string as its text, any other value as JSON, never mistaken for each other.

    A string that would read as JSON (`"42"`, `"true"`, `"{}"`) is shown as a
    JSON string (`"42"`), so whatever reads as JSON is the JSON value it
    shows and anything else is the text of a string.  Escaped for a
    terminal; lines after the first indented by `indent`.
    """
    if isinstance(value, str) and not _reads_as_json(value):
        return escape_lines(value, indent)
    return json_text(value)


def _in(seconds: float) -> str:
    return fmt_duration(max(0.0, seconds))


def _lagged(note: dict[str, Any], what: str) -> None:
    click.echo(f"ipcctl: -- {note.get('missed', '?')} {what} missed: this reader fell behind --", err=True)


# -- kv ------------------------------------------------------------------------


@click.group()
def kv() -> None:
    """Shared key/value state: get, set, del, ls, watch."""


@kv.command("get")
@click.argument("key", shell_complete=complete_keys)
@click.option("-v", "--verbose", is_flag=True, help="Also show the version, expiry and who set it.")
@pass_opts
def kv_get(opts: Opts, key: str, verbose: bool) -> None:
    """Print KEY's value; exit 1 if missing.

    A string prints as its text; any other value as JSON, and so does a
    string that would read as JSON ("42" prints as "42" with its quotes,
    the number 42 as 42).  With --json: the whole answer as JSON.
    """
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
    kind = "string" if isinstance(doc["value"], str) else f"JSON {_JSON_KINDS.get(type(doc['value']), 'value')}"
    click.echo(f"key:     {escape(doc['key'])}\nvalue:   {show_value(doc['value'], ' ' * 9)}\ntype:    {kind}")
    click.echo(f"version: {doc['version']}\nexpires: {expires}")
    click.echo(f"set:     {when} by uid {by.get('uid')} pid {by.get('pid')} ({escape(str(by.get('command')))})")


_JSON_KINDS = {dict: "object", list: "array", int: "number", float: "number", bool: "boolean", type(None): "null"}


@kv.command("set")
@click.argument("key", shell_complete=complete_keys)
@click.argument("value")
@click.option("--json-value", is_flag=True, help="Parse VALUE as JSON (default: store the string).")
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
    click.echo(f"{escape(key)}: version {doc['version']}{expiry}")


@kv.command("del")
@click.argument("key", shell_complete=complete_keys)
@click.option("--prefix", is_flag=True, help="Delete every key that starts with KEY.")
@pass_opts
def kv_del(opts: Opts, key: str, prefix: bool) -> None:
    """Delete KEY (exit 1 if missing), or with --prefix every key under it."""
    if not prefix:
        doc = opts.call("kv.delete", {"key": key})
        emit_json(doc) if opts.json else click.echo(f"deleted {escape(key)}")
        return
    if not key:
        raise click.BadParameter("an empty prefix would delete every key: give one", param_hint="KEY")
    with opts.client() as c:
        keys = c.kv_list(key)
        results = c.call_many([("kv.delete", {"key": k}) for k in keys], errors=True)
    deleted = [k for k, r in zip(keys, results, strict=True) if not isinstance(r, NotFound)]
    failed = next((r for r in results if isinstance(r, RemoteError) and not isinstance(r, NotFound)), None)
    if failed is not None:
        raise failed  # e.g. the write role: nothing of it was deleted
    if opts.json:
        emit_json({"deleted": deleted})
    else:
        click.echo(f"deleted {len(deleted)} key{'' if len(deleted) == 1 else 's'} under {escape(key)}")


@kv.command("ls")
@click.argument("prefix", default="", shell_complete=complete_keys)
@click.option("--values", is_flag=True, help="With each key's value: KEY = VALUE.")
@pass_opts
def kv_ls(opts: Opts, prefix: str, values: bool) -> None:
    """List the keys that start with PREFIX (all without), one a line."""
    with opts.client() as c:
        keys = c.kv_list(prefix)
        docs = c.call_many([("kv.get", {"key": k}) for k in keys], errors=True) if values else []
    if not values:
        if opts.json:
            emit_json(keys)
        for k in [] if opts.json else keys:
            click.echo(escape(k))
        return
    found = {
        k: d["value"] for k, d in zip(keys, docs, strict=True) if isinstance(d, dict)
    }  # gone since the list: left out
    if opts.json:
        emit_json(found)
        return
    for k, v in found.items():
        head = f"{escape(k)} = "
        click.echo(head + show_value(v, " " * width(head)))


count_opt = click.option("-c", "--count", type=click.IntRange(min=1), metavar="N", help="Exit after N.")


class _Counter:
    """Stops a stream after `limit` items (None: never)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def done(self) -> bool:
        if self.left is None:
            return False
        self.left -= 1
        return self.left <= 0


def _printer(opts: Opts, count: int | None, what: str, show: Callable[[dict[str, Any]], str]) -> Handle:
    """A stream's `handle`: a lagged marker to stderr, each item as JSON or `show`n; done after `count` items."""
    counter = _Counter(count)

    def handle(item: dict[str, Any]) -> bool:
        if item.get("lagged"):
            _lagged(item, what)
            return True
        if opts.json:
            emit_json(item)
        else:
            click.echo(show(item))
        return not counter.done()

    return handle


def _show_change(change: dict[str, Any]) -> str:
    if change["op"] == "set":
        head = f"set {escape(change['key'])} = "
        return f"{head}{show_value(change['value'], ' ' * width(head))} (version {change['version']})"
    return f"{change['op']} {escape(change['key'])} (version {change['version']})"


@kv.command("watch")
@click.argument("prefix", default="", shell_complete=complete_keys)
@count_opt
@pass_opts
def kv_watch(opts: Opts, prefix: str, count: int | None) -> None:
    """Print each change under PREFIX as it happens (set, delete, expire).

    Survives a daemon restart: it watches again, and says on stderr that
    changes made while it was away are not shown.
    """
    handle = _printer(opts, count, "changes", _show_change)
    gap = "; changes made while it was away are not shown (kv get shows what is there now)"
    until_interrupted(lambda: run_stream(opts, lambda c, _: c.kv_watch(prefix), handle, gap))


# -- channels --------------------------------------------------------------------


@click.command()
@click.argument("channel", shell_complete=complete_channels)
@click.argument("message")
@click.option("--json-value", is_flag=True, help="Parse MESSAGE as JSON (default: send the string).")
@pass_opts
def publish(opts: Opts, channel: str, message: str, json_value: bool) -> None:
    """Send MESSAGE (a string; any JSON with --json-value) to CHANNEL's subscribers."""
    doc = opts.call("publish", {"channel": channel, "message": _value_arg(message, json_value)})
    if opts.json:
        emit_json(doc)
    else:
        n = doc["delivered"]
        click.echo(f"delivered to {n} subscriber{'' if n == 1 else 's'}")


def _show_message(msg: dict[str, Any]) -> str:
    head = f"{escape(msg['channel'])}: "
    return head + show_value(msg["message"], " " * width(head))


@click.command()
@click.argument("channels", metavar="CHANNEL...", nargs=-1, required=True, shell_complete=complete_channels)
@count_opt
@pass_opts
def subscribe(opts: Opts, channels: tuple[str, ...], count: int | None) -> None:
    """Print each message published on CHANNELs: "CHANNEL: MESSAGE", one a line.

    Survives a daemon restart: it subscribes again, and says on stderr that
    messages published while it was away are lost (channels keep nothing).
    """
    handle = _printer(opts, count, "messages", _show_message)
    gap = "; messages published while it was away are lost"
    until_interrupted(lambda: run_stream(opts, lambda c, _: c.subscribe(channels), handle, gap))
