"""`ipcctl doctor`: what is wrong with this ipcd setup, and how to fix it.

Each check is one line, `ok`, `warning` or `problem`, saying what it found and,
when something is wrong, the fix.  The checks that need the daemon (ping,
status) come first; the offline ones (socket files, the installed units) run
even when nobody answers, so that `doctor` is useful exactly when ipcd is down.
Exit codes: 0 no problem, 1 a problem, 3 the daemon is unreachable.

Like the rest of `ipcctl`, this talks to the daemon only through `client`; the
unit files and `systemctl show` are read from outside, as an admin would.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from ipcd import client, config
from ipcd.client.resolve import SYSTEM_SOCKET
from ipcd.errors import ConfigError

UNITS = ("ipcd.socket", "ipcd-log.socket", "ipcd.service")
SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
HOME_DIRS = ("/home/", "/root/", "/run/user/")  # hidden by ProtectHome=yes (systemd.exec(5))
START = "start it: `systemctl start ipcd.socket ipcd-log.socket` (user instance: `systemctl --user start ...`), or run `ipcd`"
EXIT_PROBLEM = 1
EXIT_UNREACHABLE = 3


@dataclass
class Check:
    check: str
    status: str  # ok, warning, problem
    message: str
    fix: str | None = None

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.status:<8} {self.check}: {self.message}{fix}"


@dataclass
class Doctor:
    socket_opt: str | None
    user: bool
    timeout_s: float
    checks: list[Check] = field(default_factory=list)
    path: str | None = None
    reachable: bool = False
    st: dict[str, Any] | None = None
    cfg: config.Config = field(default_factory=config.Config)

    def add(self, name: str, status: str, message: str, fix: str | None = None) -> None:
        self.checks.append(Check(name, status, message, fix))

    def run(self) -> int:
        for step in STEPS:
            step(self)
        if not self.reachable:
            return EXIT_UNREACHABLE
        return EXIT_PROBLEM if any(c.status == "problem" for c in self.checks) else 0


# -- which socket, and does it answer ----------------------------------------------


def check_socket(d: Doctor) -> None:
    try:
        d.path, tried = client.resolve_socket(d.socket_opt, d.user)
    except client.Unreachable as e:
        d.add("socket", "problem", f"no control socket found (tried {', '.join(e.tried)})", START)
        return
    how = "given" if d.socket_opt or os.environ.get("IPCD_SOCKET") or os.environ.get("IPCD_RUNTIME_DIR") else "found"
    d.add("socket", "ok", f"control socket {d.path} ({how}; looked at {', '.join(tried)})")


def check_config(d: Doctor) -> None:
    uid = 0 if d.path == SYSTEM_SOCKET else os.geteuid()
    path, named = config.config_path(None, os.environ, uid)
    exists = False
    if path is not None:
        try:
            os.stat(path)
            exists = True
            readable = os.access(path, os.R_OK)
        except FileNotFoundError:
            readable = True
        except OSError:  # behind a directory we may not enter (/root)
            readable = False
        if not readable:
            d.add("config", "warning", f"cannot read {path} as you", "run doctor with sudo to check it")
            return
    try:
        d.cfg = config.load(path, named)
    except ConfigError as e:
        d.add(
            "config",
            "problem",
            f"the config cannot be used: {e}; ipcd refuses it at start and reload",
            f"correct it, then `ipcd --check-config --config {path}`",
        )
        return
    d.add("config", "ok", f"{path} is valid" if exists else f"no {path}: defaults")


_CONNECT_FIXES: dict[int, tuple[str, str]] = {
    errno.ENOENT: ("no socket file: ipcd is not running", START),
    errno.ECONNREFUSED: (
        "connection refused: the file is stale, nothing listens on it (ipcd died?)",
        "`systemctl restart ipcd.socket ipcd-log.socket`, or remove the file and run `ipcd`",
    ),
    errno.EACCES: ("permission denied by the socket file or its directory", "see the access check below"),
    errno.ENOTSOCK: ("the path is not a socket", "remove it; ipcd or systemd binds a socket there"),
    errno.EPROTOTYPE: ("the socket is not a stream socket", "is --socket pointing at the log socket?"),
}


def check_reachable(d: Doctor) -> None:
    if d.path is None:
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(d.timeout_s)
    try:
        s.connect(d.path)
    except TimeoutError:
        d.add(
            "reachable",
            "problem",
            f"{d.path}: the connection was not accepted in {d.timeout_s:g} s (ipcd is stuck or overloaded)",
            "`systemctl status ipcd.service`, `journalctl -u ipcd.service`",
        )
        return
    except OSError as e:
        what, fix = _CONNECT_FIXES.get(e.errno or 0, (e.strerror or str(e), START))
        d.reachable = e.errno == errno.EACCES  # then it may well run; the caller just may not talk to it
        d.add("reachable", "problem", f"{d.path}: {what} [{errno.errorcode.get(e.errno or 0, e.errno)}]", fix)
        return
    finally:
        s.close()
    try:
        with client.Client(d.path, d.timeout_s) as c:
            t0 = time.perf_counter()
            c.ping()
            rtt_ms = (time.perf_counter() - t0) * 1000
            d.st = c.status()
    except (client.ClientError, client.RemoteError) as e:
        d.add(
            "reachable",
            "problem",
            f"{d.path} accepts connections but does not answer: {e}",
            "`journalctl -u ipcd.service`; restart ipcd",
        )
        return
    d.reachable = True
    d.add("reachable", "ok", f"ipcd {d.st.get('version')} answers on {d.path} (pid {d.st.get('pid')}, {rtt_ms:.1f} ms)")


# -- the socket files ---------------------------------------------------------------


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner(st: os.stat_result) -> str:
    return f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _caller() -> tuple[int, set[int], str]:
    uid = os.geteuid()
    return uid, {os.getegid(), *os.getgroups()}, _user_name(uid)


def may_write(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    """Whether `uid` may connect to / send on the socket file (unix(7): write permission)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def _lstat(d: Doctor, name: str, path: str) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        d.add(name, "problem", f"{path} does not exist", START)
        return None
    except OSError as e:
        d.add(name, "problem", f"cannot look at {path}: {e.strerror}", "run doctor with sudo to see more")
        return None
    if not stat.S_ISSOCK(st.st_mode):
        d.add(name, "problem", f"{path} is not a socket", "remove it; ipcd or systemd binds a socket there")
        return None
    return st


def check_control_file(d: Doctor) -> None:
    if d.path is None:
        return
    st = _lstat(d, "control-socket", d.path)
    if st is None:
        return
    mode, group = stat.S_IMODE(st.st_mode), _group_name(st.st_gid)
    found = f"{d.path} is {mode:04o} {_owner(st)}"
    want = d.cfg.control.socket_group
    if mode == 0o660:
        note = "" if group == want else f" (ipcd's socket_group is {want})"
        d.add("control-socket", "ok", f"{found}: members of group {group} may connect{note}")
    elif mode == 0o600:
        who = "root" if st.st_uid == 0 else f"{_user_name(st.st_uid)} and root"
        note = "" if _group_exists(want) else f"; no group {want} (`groupadd --system {want}` lets others in)"
        d.add("control-socket", "ok", f"{found}: only {who} may connect{note}")
    elif mode & 0o002:
        d.add(
            "control-socket",
            "problem",
            f"{found}: any local user may connect (expected 0660, group {want})",
            f"`chmod 0660 {d.path}`; set SocketMode=0660 in ipcd.socket or [control] socket_mode",
        )
    else:
        d.add(
            "control-socket",
            "warning",
            f"{found}: expected 0660 (group {want}) or 0600",
            "set SocketMode= in ipcd.socket, or [control] socket_mode",
        )


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def check_access(d: Doctor) -> None:
    if d.path is None or not os.path.exists(d.path):
        return
    st = os.lstat(d.path)
    uid, gids, name = _caller()
    if may_write(st, uid, gids):
        why = (
            "root" if uid == 0 else "the owner" if st.st_uid == uid else "in its group" if st.st_gid in gids else "all"
        )
        d.add("access", "ok", f"you ({name}) may connect ({why})")
        return
    group = _group_name(st.st_gid)
    later = " (you are listed as a member: log in again to get the group)" if name in _members(st.st_gid) else ""
    d.add(
        "access",
        "problem",
        f"you ({name}) may not connect to {d.path} ({stat.S_IMODE(st.st_mode):04o} "
        f"{_owner(st)}): not in group {group}{later}",
        f"`sudo usermod -aG {group} {name}`, then log in again; or use sudo",
    )


def _members(gid: int) -> list[str]:
    try:
        return list(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return []


def check_log_socket(d: Doctor) -> None:
    if d.path is None:
        return
    path = client.resolve_log_socket(None, d.path, d.user)
    st = _lstat(d, "log-socket", path)
    if st is None:
        return
    mode = stat.S_IMODE(st.st_mode)
    found = f"{path} is {mode:04o} {_owner(st)}"
    uid, gids, name = _caller()
    if not may_write(st, uid, gids):
        d.add(
            "log-socket",
            "problem",
            f"{found}: you ({name}) cannot send logs",
            f"`chmod 0666 {path}`; SocketMode=0666 in ipcd-log.socket or [log] socket_mode",
        )
    elif mode == 0o666:
        d.add("log-socket", "ok", f"{found}: anyone may log")
    elif st.st_uid != 0 and mode == 0o600:
        d.add("log-socket", "ok", f"{found}: a user instance, only its owner logs")
    else:
        d.add(
            "log-socket",
            "warning",
            f"{found}: other users cannot log (expected 0666)",
            "SocketMode=0666 in ipcd-log.socket, or [log] socket_mode",
        )


# -- what the daemon says about itself -------------------------------------------------


def check_activation(d: Doctor) -> None:
    if d.st is None:
        return
    how = d.st.get("activation")
    if how == "systemd":
        d.add("activation", "ok", "the sockets were passed by systemd (socket activation)")
    elif how == "self" and _systemd_running() and _find_unit("ipcd.socket", d.user):
        d.add(
            "activation",
            "warning",
            "ipcd bound its own sockets although ipcd.socket is installed",
            "stop this ipcd and `systemctl start ipcd.socket ipcd-log.socket`",
        )
    else:
        d.add("activation", "ok", f"ipcd bound its own sockets (activation: {how})")


def check_watchdog(d: Doctor) -> None:
    if d.st is None:
        return
    wd = d.st.get("watchdog")
    if wd is None:
        d.add("watchdog", "warning", "this ipcd does not report its watchdog")
    elif not wd.get("enabled"):
        status = "warning" if d.st.get("activation") == "systemd" else "ok"
        d.add(
            "watchdog",
            status,
            "off (no WATCHDOG_USEC for ipcd)",
            "WatchdogSec= in ipcd.service" if status == "warning" else None,
        )
    elif wd.get("healthy"):
        d.add("watchdog", "ok", f"pinging systemd every {wd.get('interval_s'):g} s, healthy ({wd.get('pings')} pings)")
    else:
        d.add(
            "watchdog",
            "problem",
            f"unhealthy, pings withheld: {wd.get('problem')}; systemd will restart ipcd",
            "`journalctl -u ipcd.service`; if it repeats, report it with that log",
        )


def check_store(d: Doctor) -> None:
    if d.st is None:
        return
    store = d.st.get("store")
    if store is None:
        d.add("store", "warning", "this ipcd does not report a store")
        return
    where = f"{store.get('path')}, {store.get('entries')} entries, {store.get('bytes')} bytes"
    writer = store.get("writer")
    if writer == "ok":
        d.add("store", "ok", where)
    elif writer == "failing":
        folder = os.path.dirname(str(store.get("path")))
        d.add(
            "store",
            "problem",
            f"{where}: writes fail ({store.get('error')}); entries wait in memory",
            f"free space or fix permissions in {folder} (`df -h {folder}`, `ls -l {folder}`)",
        )
    else:
        d.add(
            "store",
            "problem",
            f"{where}: the writer is {writer} ({store.get('error')})",
            "restart ipcd: `systemctl restart ipcd.service`",
        )


# -- systemd ------------------------------------------------------------------------------


def _systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None  # sd_booted(3)


def check_systemd(d: Doctor) -> None:
    if not _systemd_running():
        d.add("systemd", "ok", "not checked: systemd is not the init system here (no /run/systemd/system)")
        return
    argv = [
        "systemctl",
        *(["--user"] if d.user else []),
        "show",
        "ipcd.service",
        "-p",
        "LoadState,ActiveState,SubState,StatusText,NRestarts,WatchdogUSec",
    ]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=max(d.timeout_s, 5.0))
    except (OSError, subprocess.TimeoutExpired) as e:
        d.add("systemd", "warning", f"`{' '.join(argv)}` failed: {e}")
        return
    props = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    if out.returncode != 0 or not props:
        d.add("systemd", "warning", f"`{' '.join(argv)}`: {out.stderr.strip() or 'no answer'}")
        return
    if props.get("LoadState") == "not-found":
        d.add("systemd", "ok", "systemd does not know ipcd.service (see the units check)")
        return
    state = f"{props.get('ActiveState')} ({props.get('SubState')})"
    text = (
        f"ipcd.service {state}, status {props.get('StatusText') or '-'!r}, "
        f"{props.get('NRestarts', '0')} restarts, watchdog {props.get('WatchdogUSec')}"
    )
    ctl = "systemctl --user" if d.user else "systemctl"
    if props.get("ActiveState") == "failed":
        d.add(
            "systemd",
            "problem",
            text,
            f"`journalctl -u ipcd.service`, then `{ctl} reset-failed ipcd.service` "
            f"and `{ctl} start ipcd.socket ipcd-log.socket`",
        )
    elif props.get("ActiveState") == "active" and not props.get("StatusText"):
        d.add(
            "systemd",
            "warning",
            f"{text}: ipcd's STATUS= does not reach systemd",
            "Type=notify and NotifyAccess=main in ipcd.service",
        )
    elif props.get("NRestarts", "0") not in ("", "0"):
        d.add("systemd", "warning", f"{text}: ipcd was restarted (crash or watchdog)", "`journalctl -u ipcd.service`")
    else:
        d.add("systemd", "ok", text)


def unit_dirs(user: bool) -> list[Path]:
    """Where systemd looks for units (systemd.unit(5)), $SYSTEMD_UNIT_PATH first."""
    if user:
        home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        defaults = [f"{home}/systemd/user", "/etc/systemd/user", "/usr/local/lib/systemd/user", "/usr/lib/systemd/user"]
    else:
        defaults = list(SYSTEM_UNIT_DIRS)
    env = os.environ.get("SYSTEMD_UNIT_PATH")
    if env is None:
        return [Path(p) for p in defaults]
    parts = env.split(":")
    dirs = [p for p in parts if p]
    if "" in parts:  # an empty component (a trailing ":") means "and the defaults"
        dirs += defaults
    return [Path(p) for p in dirs]


def _find_unit(name: str, user: bool) -> Path | None:
    for folder in unit_dirs(user):
        try:
            if (folder / name).is_file():
                return folder / name
        except OSError:  # a folder we may not enter: systemd can, we cannot tell
            continue
    return None


def _exec_path(unit_text: str, key: str) -> str | None:
    value = None
    for line in unit_text.splitlines():
        if line.startswith(f"{key}="):
            value = line.split("=", 1)[1].strip() or None  # an empty assignment resets the list
    if value is None:
        return None
    try:
        words = shlex.split(value)
    except ValueError:
        return value
    return words[0].lstrip("-@:+!") if words else None  # systemd.service(5): exec prefixes


def _interpreter(exe: str) -> str | None:
    try:
        with open(exe, "rb") as f:
            head = f.readline(256)
    except OSError:
        return None
    return head[2:].decode(errors="replace").split()[0] if head.startswith(b"#!") and head[2:].split() else None


def check_units(d: Doctor) -> None:
    scope = "user" if d.user else "system"
    found = {name: _find_unit(name, d.user) for name in UNITS}
    missing = [n for n, p in found.items() if p is None]
    install = "`ipcd install-units --user`" if d.user else "`sudo ipcd install-units`"
    if len(missing) == len(UNITS):
        other = "system" if d.user else "user"
        hint = f" (the {other} instance has them)" if any(_find_unit(n, not d.user) for n in UNITS) else ""
        d.add(
            "units",
            "warning",
            f"no ipcd units installed for the {scope} instance{hint}",
            f"{install}, then the systemctl commands it prints",
        )
        return
    if missing:
        d.add(
            "units",
            "problem",
            f"{', '.join(missing)} missing beside {found[next(n for n in UNITS if found[n])]}",
            f"{install} writes all three",
        )
        return
    service = found["ipcd.service"]
    assert service is not None
    try:
        text = service.read_text(errors="replace")
    except OSError as e:
        d.add("units", "warning", f"cannot read {service}: {e.strerror}", "run doctor with sudo")
        return
    exe = _exec_path(text, "ExecStart")
    if exe is None or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        d.add(
            "units",
            "problem",
            f"{service}: ExecStart={exe} is not an executable file",
            f"{install} writes the path of this installation",
        )
        return
    interp = _interpreter(exe)
    real = os.path.realpath(interp) if interp else None
    protected = not d.user and any(line.strip() == "ProtectHome=yes" for line in text.splitlines())
    if protected and real and (real.startswith(HOME_DIRS) or exe.startswith(HOME_DIRS)):
        d.add(
            "units",
            "problem",
            f"{service}: ExecStart={exe} runs on {real or exe}, which ProtectHome=yes hides",
            "install ipcd in a venv outside /home and /root, made from /usr/bin/python3; or a drop-in with "
            "ProtectHome=read-only",
        )
        return
    d.add("units", "ok", f"{', '.join(str(p) for p in found.values())}; ExecStart={exe}")


STEPS: list[Callable[[Doctor], None]] = [
    check_socket,
    check_config,
    check_reachable,
    check_control_file,
    check_access,
    check_log_socket,
    check_activation,
    check_watchdog,
    check_systemd,
    check_store,
    check_units,
]


def register(cli: click.Group) -> None:
    """Add `doctor` to the ipcctl group."""

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="A JSON list of the checks.")
    @click.pass_context
    def doctor(ctx: click.Context, as_json: bool) -> None:
        """Check the setup (socket, access, activation, watchdog, store, units) and say how to fix it."""
        opts = ctx.obj
        d = Doctor(opts.socket, opts.user, opts.timeout_s)
        code = d.run()
        if as_json or opts.json:
            click.echo(json.dumps([asdict(c) for c in d.checks], ensure_ascii=False))
        else:
            for c in d.checks:
                click.echo(c.line())
        ctx.exit(code)
