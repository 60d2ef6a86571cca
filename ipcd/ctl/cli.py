"""`ipcctl`: how a person talks to ipcd.

Human output by default, one JSON document with `--json` (JSON lines when
streaming).  Exit codes (DESIGN.md "ipcctl"): 0 ok, 1 the daemon answered
with an error, 2 usage, 3 daemon unreachable, 4 permission denied (by the
socket file or the daemon's -32001).  Every expected failure is a
`click.ClickException` carrying its exit code and a message that says what
to do; no traceback reaches the user.

This module is the root group and the list of commands; the commands live
in `admin`, `logs`, `ipc` and `doctor`, and share `common` and `errors`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ipcd import __version__
from ipcd.client import AccessDenied, RemoteError, Unreachable
from ipcd.ctl import admin, completion, doctor, ipc, logs, metrics
from ipcd.ctl.common import Opts
from ipcd.ctl.errors import to_cli_error


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


cli.add_command(admin.status)
cli.add_command(admin.ping)
cli.add_command(admin.call)
cli.add_command(admin.shutdown)
cli.add_command(admin.reload)
cli.add_command(admin.clients)
cli.add_command(logs.logs)
cli.add_command(logs.send)
cli.add_command(ipc.kv)
cli.add_command(ipc.publish)
cli.add_command(ipc.subscribe)
cli.add_command(doctor.doctor)
cli.add_command(completion.completion)
cli.add_command(metrics.metrics)


def main() -> None:
    cli(prog_name="ipcctl")


if __name__ == "__main__":
    main()
