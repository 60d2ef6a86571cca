"""`ipcctl doctor`: what is wrong with this ipcd setup, and how to fix it.

Each check is one line, `ok`, `warning` or `problem`, saying what it found and,
when something is wrong, the fix.  The checks that need the daemon (ping,
status) come first; the offline ones (socket files, the installed units) run
even when nobody answers, so that `doctor` is useful exactly when ipcd is down.
Exit codes: 0 no problem, 1 a problem, 3 the daemon is unreachable.

This module is the order of the checks, their rendering and the command; the
checks are in `checks_sockets` and `checks_service`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import click

from ipcd.ctl import checks_service, checks_sockets, forward
from ipcd.ctl.checkup import Check, Checkup
from ipcd.ctl.common import Opts, pass_opts
from ipcd.ctl.errors import EXIT_PROBLEM, EXIT_UNREACHABLE
from ipcd.ctl.escape import escape, json_text

STEPS: list[Callable[[Checkup], None]] = [
    checks_sockets.check_socket,
    checks_sockets.check_trust,
    checks_sockets.check_config,
    checks_sockets.check_reachable,
    checks_sockets.check_control_file,
    checks_sockets.check_access,
    checks_sockets.check_log_socket,
    checks_service.check_activation,
    checks_service.check_watchdog,
    checks_service.check_systemd,
    checks_service.check_store,
    checks_service.check_units,
    forward.check_forward,
]


def run(d: Checkup) -> int:
    """Run every check in order; the exit code."""
    for step in STEPS:
        step(d)
    if not d.reachable:
        return EXIT_UNREACHABLE
    return EXIT_PROBLEM if any(c.status == "problem" for c in d.checks) else 0


def render(c: Check) -> str:
    fix = f"; fix: {escape(c.fix)}" if c.fix else ""
    return f"{c.status:<8} {c.check}: {escape(c.message)}{fix}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list of the checks.")
@pass_opts
def doctor(opts: Opts, as_json: bool) -> None:
    """Check the setup (socket, access, activation, watchdog, store, units) and say how to fix it."""
    d = Checkup(opts.socket, opts.user, opts.timeout_s)
    code = run(d)
    if as_json or opts.json:
        click.echo(json_text([asdict(c) for c in d.checks]))
    else:
        for c in d.checks:
            click.echo(render(c))
    click.get_current_context().exit(code)
