"""ipcctl's exit codes, and the errors that carry them (DESIGN.md "ipcctl").

0 ok, 1 the daemon answered with an error (for `doctor`: a check found a
problem), 2 usage (click's own), 3 daemon unreachable, 4 permission denied
by the socket file or by the daemon's -32001.  Every expected failure is a
`click.ClickException` carrying its exit code and a message that says what
to do; `to_cli_error` makes one from the client's exceptions.
"""

from __future__ import annotations

from typing import Any

import click

from ipcd.client import AccessDenied, PermissionDenied, RemoteError, Unreachable
from ipcd.ctl.escape import escape

EXIT_DAEMON_ERROR = 1
EXIT_PROBLEM = 1  # doctor: a check found a problem
EXIT_UNREACHABLE = 3
EXIT_PERMISSION = 4


class CliError(click.ClickException):
    exit_code = EXIT_DAEMON_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"ipcctl: {escape(self.format_message())}", err=True)  # it may quote what a peer wrote


class DaemonError(CliError):
    exit_code = EXIT_DAEMON_ERROR


class UnreachableError(CliError):
    exit_code = EXIT_UNREACHABLE


class PermissionError_(CliError):
    exit_code = EXIT_PERMISSION


def to_cli_error(e: Exception) -> CliError:
    """The ipcctl error for one of the client's; anything else is raised again."""
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
