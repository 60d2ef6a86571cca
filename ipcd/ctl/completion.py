"""Shell completion: `ipcctl completion bash|zsh|fish`, and what completes dynamically.

The scripts are click's own (`click.shell_completion`): the shell calls
ipcctl back with `_IPCCTL_COMPLETE=<shell>_complete`, and click completes
commands, options and choices.  Beside those, these complete from the
daemon: keys (`kv.list`), channels that have a subscriber (`channels`),
and units (`-u`, from the `sender_unit` of the newest 1000 entries); and
without it, priorities and their ranges.  What needs the daemon asks it
with a short timeout (0.5 s) and gives nothing, silently, when it is down
or refuses: a completion never prints an error into the command line.
`contrib/completions/` holds the scripts as `completion` prints them.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from ipcd.client import Client, IpcdError
from ipcd.wire.priority import SEVERITY_NAMES

SHELLS = ("bash", "zsh", "fish")
TIMEOUT_S = 0.5
MAX_ITEMS = 200
UNIT_SCAN = 1000  # the newest entries looked at for units


def _ask(ctx: click.Context, method: str, params: dict[str, Any]) -> Any:
    """The daemon's answer, or None when it is down, slow or refuses."""
    root = ctx.find_root().params
    try:
        with Client(root.get("socket_path"), TIMEOUT_S, bool(root.get("user"))) as c:
            return c.call(method, params)
    except (IpcdError, OSError, ValueError):
        return None


def complete_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    doc = _ask(ctx, "kv.list", {"prefix": incomplete})
    keys = doc.get("keys", []) if isinstance(doc, dict) else []
    return [CompletionItem(k) for k in keys[:MAX_ITEMS] if isinstance(k, str)]


def complete_channels(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    doc = _ask(ctx, "channels", {"prefix": incomplete})
    names = doc.get("channels", []) if isinstance(doc, dict) else []
    return [CompletionItem(n) for n in names[:MAX_ITEMS] if isinstance(n, str)]


def complete_units(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    doc = _ask(ctx, "logs.query", {"limit": UNIT_SCAN})
    entries = doc.get("entries", []) if isinstance(doc, dict) else []
    units = {e.get("sender_unit") for e in entries if isinstance(e, dict)}
    found = sorted(u for u in units if isinstance(u, str) and u.startswith(incomplete))
    return [CompletionItem(u) for u in found[:MAX_ITEMS]]


def complete_priorities(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    head, sep, tail = incomplete.rpartition("..")
    words = [*SEVERITY_NAMES, *(str(n) for n in range(len(SEVERITY_NAMES)))]
    if sep:  # the second end of a range: warning..<TAB>
        return [CompletionItem(f"{head}..{w}") for w in words if w.startswith(tail)]
    return [CompletionItem(w) for w in words if w.startswith(incomplete)]


def script(cli: click.Command, shell: str, prog_name: str = "ipcctl") -> str:
    """The completion script for `shell`, as click writes it."""
    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell!r}: use one of {', '.join(SHELLS)}")
    var = f"_{prog_name.replace('-', '_').upper()}_COMPLETE"
    return cls(cli, {}, prog_name, var).source()


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  ipcctl completion bash > /etc/bash_completion.d/ipcctl  (or: source <(ipcctl completion bash))
    zsh:   ipcctl completion zsh > "${fpath[1]}/_ipcctl"
    fish:  ipcctl completion fish > ~/.config/fish/completions/ipcctl.fish
    """
    click.echo(script(ctx.find_root().command, shell))
