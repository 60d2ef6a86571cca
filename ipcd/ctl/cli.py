"""`ipcctl`: how a person talks to ipcd.

Human output by default, one JSON document with `--json` (JSON lines when
streaming).  Exit codes (DESIGN.md "ipcctl"): 0 ok, 1 the daemon answered
with an error, 2 usage, 3 daemon unreachable, 4 permission denied (by the
socket file or the daemon's -32001).  Every expected failure is a
`click.ClickException` carrying its exit code and a message that says what
to do; no traceback reaches the user.

This module is the root group and the one list of commands (`COMMANDS`);
the commands live in `admin`, `logs`, `ipc`, `doctor`, `completion` and
`metrics`, and share `common` and `errors`.  A command's module is imported
when the command runs, so `ipcctl status` does not load what `ipcctl logs`
or `doctor` need.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ipcd import __version__
from ipcd.client.errors import AccessDenied, RemoteError, Unreachable
from ipcd.ctl.common import Opts
from ipcd.ctl.errors import to_cli_error

# Every command: its name, and the module and function that are it.
COMMANDS = {
    "status": ("admin", "status"),
    "ping": ("admin", "ping"),
    "call": ("admin", "call"),
    "shutdown": ("admin", "shutdown"),
    "reload": ("admin", "reload"),
    "clients": ("admin", "clients"),
    "logs": ("logs", "logs"),
    "send": ("logs", "send"),
    "kv": ("ipc", "kv"),
    "publish": ("ipc", "publish"),
    "subscribe": ("ipc", "subscribe"),
    "doctor": ("doctor", "doctor"),
    "completion": ("completion", "completion"),
    "metrics": ("metrics", "metrics"),
}


class IpcctlGroup(click.Group):
    """The commands of `COMMANDS`, loaded when asked for; the client's exceptions as exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        where = COMMANDS.get(name)
        if where is None:
            return None
        command: click.Command = getattr(importlib.import_module(f"ipcd.ctl.{where[0]}"), where[1])
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Unreachable, AccessDenied, RemoteError) as e:
            raise to_cli_error(e) from None
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)  # `ipcctl logs | head`


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


def main() -> None:
    cli(prog_name="ipcctl")


if __name__ == "__main__":
    main()
