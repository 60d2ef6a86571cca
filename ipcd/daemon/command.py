"""The `ipcd` command: run the daemon in the foreground, check a config, install units.

Exit codes: 0 after a graceful stop, 1 when ipcd cannot start (another
instance, a path in the way, bad activation), 2 for usage errors, 78
(EX_CONFIG) for a bad config file.  On a failed start under systemd, STATUS=
and ERRNO= say why.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys

import click

from ipcd import __version__, config
from ipcd.config import Config
from ipcd.daemon import units
from ipcd.daemon.daemon import Daemon
from ipcd.daemon.diagnostics import set_log_level, setup_logging
from ipcd.daemon.instance import Paths
from ipcd.daemon.systemd import Notifier
from ipcd.errors import ConfigError, IpcdError, StartupError

log = logging.getLogger("ipcd")

EXIT_FAILURE = 1
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG; systemd shows it as "CONFIG"


def run(runtime: str | None, state: str | None, config_file: str | None, log_level: str | None) -> int:
    setup_logging(log_level or "info")
    notifier = Notifier()
    try:
        paths = Paths.resolve(runtime, state, config_file, os.environ, os.geteuid())
        cfg = config.load(paths.config_path, paths.config_named)
        if log_level is None:
            set_log_level(cfg.daemon.log_level)
        d = Daemon(cfg, paths, notifier, log_level)
    except ConfigError as e:
        log.error("config error: %s", e)
        notifier.failed_exit(f"config error: {e}", errno.EINVAL)
        return EXIT_CONFIG
    try:
        d.install_signals()
        d.start()
    except (IpcdError, OSError) as e:
        log.error("cannot start: %s", e)
        code = e.errno if isinstance(e, (StartupError, OSError)) and e.errno else errno.EINVAL
        notifier.failed_exit(f"cannot start: {e}", code)
        d.stop(quiet=True)
        return EXIT_FAILURE
    except Exception as e:
        log.exception("cannot start: unexpected error")
        notifier.failed_exit(f"cannot start: {type(e).__name__}: {e}", errno.EIO)
        d.stop(quiet=True)
        return EXIT_FAILURE
    d.run()
    d.stop()
    if d.failure is not None:
        notifier.failed_exit(f"stopped: {d.failure}", errno.EIO)
        return EXIT_FAILURE
    return 0


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ipcd")
@click.option("--runtime-dir", metavar="DIR", help="Where the sockets go [default: see README].")
@click.option("--state-dir", metavar="DIR", help="Where the store goes.")
@click.option("--config", "config_file", metavar="FILE", help="Config file (must exist).")
@click.option(
    "--log-level", type=click.Choice(config.LOG_LEVELS), help="Overrides daemon.log_level, after a reload too."
)
@click.option("--check-config", is_flag=True, help="Load the config, print the effective settings, exit.")
@click.pass_context
def cli(
    ctx: click.Context,
    runtime_dir: str | None,
    state_dir: str | None,
    config_file: str | None,
    log_level: str | None,
    check_config: bool,
) -> None:
    """ipcd: a local IPC daemon (control and log sockets), in the foreground."""
    if ctx.invoked_subcommand is not None:
        return
    if check_config:
        sys.exit(_check_config(runtime_dir, state_dir, config_file))
    sys.exit(run(runtime_dir, state_dir, config_file, log_level))


def _check_config(runtime: str | None, state: str | None, config_file: str | None) -> int:
    paths = Paths.resolve(runtime, state, config_file, os.environ, os.geteuid())
    try:
        cfg: Config = config.load(paths.config_path, paths.config_named)
    except ConfigError as e:
        click.echo(f"ipcd: config error: {e}", err=True)
        return EXIT_CONFIG
    doc = {
        "config": str(paths.config_path) if paths.config_path else None,
        "config_exists": bool(paths.config_path and paths.config_path.exists()),
        "runtime_dir": str(paths.runtime_dir),
        "state_dir": str(paths.state_dir),
        **config.to_dict(cfg),
    }
    click.echo(json.dumps(doc, indent=2))
    return 0


@cli.command("install-units")
@click.option("--user", is_flag=True, help="The user instance (systemctl --user), in ~/.config/systemd/user.")
@click.option("--unit-dir", type=click.Path(), help="Write the units here [/etc/systemd/system].")
@click.option("--sysusers-dir", type=click.Path(), help="Write the sysusers.d entry here [/etc/sysusers.d].")
@click.option("--man-dir", type=click.Path(), help="Install the man pages here [/usr/local/share/man].")
@click.option("--link", is_flag=True, help="Link ipcd and ipcctl into /usr/local/bin (--user: ~/.local/bin).")
@click.option("--bin-dir", type=click.Path(), help="Where --link puts the links.")
@click.option("--dry-run", is_flag=True, help="Print what would be written, and the warnings; write nothing.")
def install_units(
    user: bool,
    unit_dir: str | None,
    sysusers_dir: str | None,
    man_dir: str | None,
    link: bool,
    bin_dir: str | None,
    dry_run: bool,
) -> None:
    """Write ipcd's systemd units with this installation's paths, and its man pages."""
    from pathlib import Path

    links_to = (Path(bin_dir) if bin_dir else units.default_bin_dir(user)) if link or bin_dir else None
    p = units.plan(
        user,
        Path(unit_dir) if unit_dir else None,
        Path(sysusers_dir) if sysusers_dir else None,
        Path(man_dir) if man_dir else None,
        links_to,
    )
    if dry_run:
        for path, text in p.files.items():
            click.echo(f"# {path}\n{text}")
        for target, exe in p.links.items():
            click.echo(f"# link {target} -> {exe}")
    else:
        try:
            skipped = units.write(p)
        except PermissionError as e:
            raise click.ClickException(f"cannot write {e.filename}: permission denied (use sudo, or --user)") from None
        for path in p.files:
            click.echo(f"wrote {path}")
        for target, exe in p.links.items():
            click.echo(f"linked {target} -> {exe}")
        p.warnings.extend(skipped)
    for w in p.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo("next:" if not dry_run else "# next:")
    for step in p.next_steps:
        click.echo(f"  {step}" if not dry_run else f"#   {step}")


def main() -> None:
    cli(prog_name="ipcd")
