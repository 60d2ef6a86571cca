"""Streams that outlive a daemon restart: `logs -f`, `subscribe`, `kv watch`.

`run_stream` opens a stream and hands each item to the command; when the
daemon goes away (`systemctl restart ipcd`, a crash), it says so on stderr,
reconnects with a doubling backoff (0.1 s up to 5 s), and opens the stream
again through the same `start` function, told that it is a reconnect, so
that it can resume: `logs -f` after the last id it printed, `subscribe` the
same channels, `kv watch` the same prefix.  A first connection that fails
is the usual exit 3; only a stream that once ran reconnects.  Ctrl-C ends
the command with exit 0, as it ends `journalctl -f`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import click

from ipcd.client import Client, Unreachable, Untrusted
from ipcd.ctl.common import Opts
from ipcd.ctl.escape import escape

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0

# start(client, reconnected) -> the stream's items; handle(item) -> False to stop.
Start = Callable[[Client, bool], Iterable[Any]]
Handle = Callable[[Any], bool]


def note(text: str) -> None:
    click.echo(f"ipcctl: {text}", err=True)


def run_stream(opts: Opts, start: Start, handle: Handle, gap: str = "") -> None:
    """Run a stream until `handle` says stop; reconnect across daemon restarts.

    `gap` is said on stderr after a reconnect (what may have been missed).
    """
    started = False
    delay_s = FIRST_DELAY_S
    lost_at: str | None = None
    while True:
        try:
            with opts.client() as c:
                items = start(c, started)
                if lost_at is not None:
                    note(f"reconnected to ipcd at {escape(c.path)}{gap}")
                    lost_at, delay_s = None, FIRST_DELAY_S
                started = True
                for item in items:
                    if not handle(item):
                        return
                return  # the stream ended by itself (nothing left to listen to)
        except Unreachable as e:
            if not started or isinstance(e, Untrusted):
                raise
            if lost_at is None:
                lost_at = e.path or "its socket"
                note(f"lost the connection to ipcd at {escape(lost_at)}: {escape(str(e))}; reconnecting")
        time.sleep(delay_s)  # the backoff between tries, not a wait for a condition
        delay_s = min(delay_s * 2, MAX_DELAY_S)


def until_interrupted(fn: Callable[[], None]) -> None:
    """Run `fn`; Ctrl-C ends it quietly (exit 0), as it ends journalctl -f."""
    try:
        fn()
    except KeyboardInterrupt:
        pass
