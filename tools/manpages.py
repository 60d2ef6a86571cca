"""Write the man pages ipcctl(1), ipcd(8) and ipcd.toml(5) from the code they document.

    python tools/manpages.py            # rewrite ipcd/manpages/*
    python tools/manpages.py --check    # exit 1 if a page is not current

The commands' synopses, options and help come from the click commands
(`ipcd.ctl.cli.cli`, `ipcd.daemon.command.cli`); the config keys (the
sections and the `[[forward]]` table), their defaults, ranges, allowed values
and docs from `ipcd.config`'s dataclasses.  What the code cannot say (exit
codes, files, environment, signals) is written here once.
The pages are shipped in the package (`ipcd/manpages`), so that `ipcd
install-units` can install them; a test checks they are current and that
`groff -man -ww -z` finds nothing to warn about.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from ipcd import __version__, config
from ipcd.ctl.cli import cli as ipcctl_cli
from ipcd.daemon.command import cli as ipcd_cli

OUT = Path(__file__).resolve().parent.parent / "ipcd" / "manpages"


def esc(text: str) -> str:
    """Text as roff reads it: backslashes, hyphens and a leading dot or quote made literal."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(f"\\&{line}" if line[:1] in (".", "'") else line for line in text.split("\n"))


def paragraphs(help_text: str) -> Iterator[str]:
    """click help as roff paragraphs; a `\\b` paragraph keeps its lines."""
    for para in inspect.cleandoc(click.unstyle(help_text)).split("\n\n"):
        if para.startswith("\b\n"):
            lines = [line.strip() for line in para[2:].splitlines()]
            yield ".nf\n" + "\n".join(esc(line) for line in lines) + "\n.fi"
        else:
            yield esc(" ".join(line.strip() for line in para.splitlines()))


def options(ctx: click.Context, cmd: click.Command) -> Iterator[str]:
    for param in cmd.get_params(ctx):
        if isinstance(param, click.Argument) or ("--help" in getattr(param, "opts", ()) and ctx.parent is not None):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        yield f".TP\n.B {esc(names)}\n{esc(click.unstyle(help_text)) or '.'}"


def command_section(ctx: click.Context, cmd: click.Command, path: str) -> Iterator[str]:
    sub = click.Context(cmd, info_name=path.rsplit(" ", 1)[-1], parent=ctx)
    usage = " ".join(cmd.collect_usage_pieces(sub))
    yield f'.SS "{esc(path)} {esc(usage)}"'
    yield from (f".PP\n{p}" for p in paragraphs(cmd.help or ""))
    yield from options(sub, cmd)
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from command_section(sub, cmd.commands[name], f"{path} {name}")


def head(name: str, section: int, title: str, summary: str) -> list[str]:
    return [
        f'.TH {name.upper()} {section} "" "ipcd {__version__}" "{title}"',
        ".SH NAME",
        f"{name} \\- {esc(summary)}",
    ]


def ipcctl_page() -> str:
    ctx = ipcctl_cli.make_context("ipcctl", [], resilient_parsing=True)  # with its context_settings
    lines = head("ipcctl", 1, "User Commands", "talk to ipcd: status, logs, key/value state, channels")
    lines += [".SH SYNOPSIS", ".B ipcctl", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...", ".SH DESCRIPTION"]
    lines += [f".PP\n{p}" for p in paragraphs(ipcctl_cli.help or "")]
    lines += [".PP", _IPCCTL_TEXT, ".SH OPTIONS", *options(ctx, ipcctl_cli), ".SH COMMANDS"]
    assert isinstance(ipcctl_cli, click.Group)
    for name in ipcctl_cli.list_commands(ctx):  # loaded as they are asked for
        command = ipcctl_cli.get_command(ctx, name)
        assert command is not None
        lines += command_section(ctx, command, f"ipcctl {name}")
    lines += [_IPCCTL_TAIL]
    return "\n".join(lines) + "\n"


def ipcd_page() -> str:
    ctx = ipcd_cli.make_context("ipcd", [], resilient_parsing=True)
    lines = head("ipcd", 8, "System Administration", "a local IPC daemon: a JSON-RPC control socket and a log socket")
    lines += [".SH SYNOPSIS", ".B ipcd", "[\\fIOPTIONS\\fR]", ".br", ".B ipcd install\\-units", "[\\fIOPTIONS\\fR]"]
    lines += [".SH DESCRIPTION", *(f".PP\n{p}" for p in paragraphs(ipcd_cli.help or "")), ".PP", _IPCD_TEXT]
    lines += [".SH OPTIONS", *options(ctx, ipcd_cli), ".SH COMMANDS"]
    assert isinstance(ipcd_cli, click.Group)
    for name in sorted(ipcd_cli.commands):
        lines += command_section(ctx, ipcd_cli.commands[name], f"ipcd {name}")
    lines += [_IPCD_TAIL]
    return "\n".join(lines) + "\n"


def _default(f: dataclasses.Field[object]) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None:
        return "unset"
    if f.metadata.get("kind") == "mode" and isinstance(value, int):
        return f'"{value:04o}"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _num(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if value is not None else "-"


_KINDS = {"target": "name", "forward_type": "type", "strs": "strings"}  # kinds whose name says little


def _keys(cls: type, required: tuple[str, ...] = ()) -> Iterator[str]:
    """A section's keys: the kind, the default (or required), the range or the values allowed, the doc."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        what = "required" if f.name in required else f"default {_default(f)}"
        if meta.get("min") is not None or meta.get("max") is not None:
            what += f" ({_num(meta.get('min'))} to {_num(meta.get('max'))})"
        if meta.get("choices"):
            what += f" (one of {', '.join(meta['choices'])})"
        kind = _KINDS.get(meta.get("kind", ""), meta.get("kind", ""))
        yield f".TP\n.B {esc(f.name)}\n{esc(kind)}, {esc(what)}"
        if meta.get("doc"):
            yield f"\\(em {esc(meta['doc'])}"


def toml_page() -> str:
    lines = head("ipcd.toml", 5, "File Formats", "the ipcd configuration file")
    lines += [".SH SYNOPSIS", _TOML_SYNOPSIS, ".SH DESCRIPTION", _TOML_TEXT]
    for section, cls in config.SECTIONS.items():
        lines.append(f'.SH "[{section}]"')
        lines += _keys(cls)
    lines += ['.SH "[[forward]]"', _FORWARD_TEXT, *_keys(config.ForwardConfig, config.FORWARD_REQUIRED)]
    lines.append(_TOML_TAIL)
    return "\n".join(lines) + "\n"


PAGES = {"ipcctl.1": ipcctl_page, "ipcd.8": ipcd_page, "ipcd.toml.5": toml_page}


_IPCCTL_TEXT = esc(
    "Human output by default, one JSON document with --json (JSON lines when streaming). "
    "Whatever a peer sent is shown with every control character, escape sequence and bidi "
    "override escaped (\\x1b, \\u202e), and the lines of a multi-line message after the first "
    "are indented under it. logs -f, subscribe and kv watch survive a daemon restart."
)
_IPCCTL_TAIL = "\n".join(
    [
        ".SH EXIT STATUS",
        ".TP\n.B 0\nok",
        ".TP\n.B 1\nthe daemon answered with an error (for doctor: a check found a problem)",
        ".TP\n.B 2\nusage error: an option or argument ipcctl cannot read",
        ".TP\n.B 3\nthe daemon is unreachable, or the path to its socket is not safe to use",
        ".TP\n.B 4\npermission denied, by the socket file or by the daemon",
        ".SH ENVIRONMENT",
        ".TP\n.B IPCD_SOCKET\nthe control socket, after \\-\\-socket",
        ".TP\n.B IPCD_RUNTIME_DIR\nthe directory of the sockets",
        ".TP\n.B IPCD_LOG_SOCKET\nthe log socket for send",
        ".TP\n.B XDG_RUNTIME_DIR\nwhere the user instance's sockets are (else /tmp/ipcd\\-UID)",
        ".TP\n.B PAGER\nthe pager for logs on a terminal (less with LESS=FRSXMK by default)",
        ".TP\n.B NO_COLOR\nno colours, even on a terminal",
        ".SH FILES",
        ".TP\n.I /run/ipcd/ipcd.sock\nthe system instance's control socket",
        ".TP\n.I /run/ipcd/log.sock\nits log socket",
        ".SH SEE ALSO",
        ".BR ipcd (8),",
        ".BR ipcd.toml (5),",
        ".BR journalctl (1),",
        ".BR logger (1)",
    ]
)
_IPCD_TEXT = esc(
    "ipcd runs in the foreground, under systemd with socket activation, readiness notification, "
    "a synchronous reload and the watchdog, or without it. It logs its own diagnostics to stderr."
)
_IPCD_TAIL = "\n".join(
    [
        ".SH SIGNALS",
        ".TP\n.B SIGTERM, SIGINT\na graceful stop: what was accepted is stored, then exit 0",
        ".TP\n.B SIGHUP\nre\\-read the config; a bad one is refused and the old one stays",
        ".SH EXIT STATUS",
        ".TP\n.B 0\nstopped by SIGTERM, SIGINT or the shutdown method",
        ".TP\n.B 1\ncould not start",
        ".TP\n.B 2\nusage error",
        ".TP\n.B 78\nconfig error (EX_CONFIG): the message names the file, the line and the key",
        ".SH FILES",
        ".TP\n.I /run/ipcd/ipcd.sock, /run/ipcd/log.sock\nthe sockets of the system instance",
        ".TP\n.I /run/ipcd/ipcd.lock\nheld with flock(2) while ipcd runs: one instance per runtime directory",
        ".TP\n.I /var/lib/ipcd/ipcd.db, /var/lib/ipcd/kv.db\nthe log store and the key/value state",
        ".TP\n.I /var/lib/ipcd/forward.db\nthe forwarding targets' cursors, once a [[forward]] target exists",
        ".TP\n.I /etc/ipcd/ipcd.toml\nthe config file, see",
        ".BR ipcd.toml (5)",
        ".PP",
        "A user instance keeps the same names in its own directories (see ENVIRONMENT).",
        ".SH ENVIRONMENT",
        ".TP\n.B IPCD_RUNTIME_DIR, IPCD_STATE_DIR, IPCD_CONFIG\nthe directories and the config file, after "
        "\\-\\-runtime\\-dir, \\-\\-state\\-dir and \\-\\-config",
        ".TP\n.B RUNTIME_DIRECTORY, STATE_DIRECTORY, CONFIGURATION_DIRECTORY\n"
        "from systemd (the first, if it names several): the runtime dir, the state dir, the directory of ipcd.toml",
        ".TP\n.B XDG_RUNTIME_DIR, XDG_STATE_HOME, XDG_CONFIG_HOME, HOME\n"
        "for a user other than root: $XDG_RUNTIME_DIR/ipcd (else /tmp/ipcd\\-UID), $XDG_STATE_HOME/ipcd "
        "(else ~/.local/state/ipcd), $XDG_CONFIG_HOME/ipcd/ipcd.toml (else ~/.config/ipcd/ipcd.toml)",
        ".TP\n.B LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID, NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID\nfrom systemd",
        ".TP\n.B JOURNAL_STREAM\nset: each diagnostic line on stderr starts with its <N> priority prefix",
        ".SH SEE ALSO",
        ".BR ipcctl (1),",
        ".BR ipcd.toml (5),",
        ".BR systemd.socket (5),",
        ".BR sd_notify (3)",
    ]
)
_TOML_TEXT = esc(
    "ipcd reads the first file of SYNOPSIS that applies, unless ipcd --config or $IPCD_CONFIG names "
    "one (which must then exist); a missing default file means the defaults. "
    "TOML; every section and every key is optional, but for name and type in a [[forward]] table. "
    "An unknown section or key, or a value of the wrong type or out of range, stops ipcd (a reload keeps the old config) with an error naming the file, the line "
    'and the key. Modes are strings ("0660") or TOML octal (0o660). ipcd --check-config '
    "prints the effective settings."
)
_TOML_SYNOPSIS = "\n".join(
    [
        ".I $CONFIGURATION_DIRECTORY/ipcd.toml",
        "(systemd's ConfigurationDirectory=)",
        ".br",
        ".I /etc/ipcd/ipcd.toml",
        "(root)",
        ".br",
        ".I $XDG_CONFIG_HOME/ipcd/ipcd.toml",
        "or, without XDG_CONFIG_HOME,",
        ".I ~/.config/ipcd/ipcd.toml",
        "(other users)",
    ]
)
_FORWARD_TEXT = esc(
    "One [[forward]] table per target the log is forwarded to, at least once and in id order; none by default. "
    "name and type are required. The filters (priority, ident, unit, uid) are optional; all given must match. "
    "An error names the table by its place, counting from 1 (forward[2].address)."
)
_TOML_TAIL = "\n".join([".SH SEE ALSO", ".BR ipcd (8),", ".BR ipcctl (1)"])


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, render in PAGES.items():
        text = render()
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"not current: {', '.join(stale)}; run python tools/manpages.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
