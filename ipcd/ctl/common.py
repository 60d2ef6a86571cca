"""What every ipcctl command shares: the global options, JSON output, formats.

`Opts` is what the root group's options (`--socket`, `--user`, `--json`,
`--timeout`) leave in the click context; a command asks for it with
`@pass_opts`.  Commands import this module and `errors`, never `cli`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ipcd.client import Client
from ipcd.ctl.escape import json_text


class Opts:
    """The global options, and a `Client` made from them."""

    def __init__(self, socket: str | None, user: bool, as_json: bool, timeout_s: float) -> None:
        self.socket = socket
        self.user = user
        self.json = as_json
        self.timeout_s = timeout_s

    def client(self, timeout_s: float | None = -1.0) -> Client:
        """A client for the chosen socket; `timeout_s` other than -1 replaces `--timeout`."""
        return Client(self.socket, self.timeout_s if timeout_s == -1.0 else timeout_s, self.user)

    def call(self, method: str, params: Any = None) -> Any:
        """One call on a connection of its own."""
        with self.client() as c:
            return c.call(method, params)


pass_opts = click.make_pass_decorator(Opts)


def emit_json(value: Any) -> None:
    """One JSON document on stdout, non-ASCII as it is, terminal controls escaped (`escape.json_text`)."""
    click.echo(json_text(value))


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


def parse_json_arg(text: str, what: str) -> Any:
    """`text` parsed as JSON; bad JSON is a usage error (exit 2) naming `what`."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint=what) from None
