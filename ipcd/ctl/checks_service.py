"""`doctor`'s checks of how ipcd runs: what it says about itself (activation,
watchdog, store), what systemd says about it, and the installed units.

The unit files and `systemctl show` are read from outside, as an admin would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ipcd.config import PROTECT_HOME_DIRS, UNIT_NAMES
from ipcd.ctl.checkup import Checkup

SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)


def check_activation(d: Checkup) -> None:
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


def check_watchdog(d: Checkup) -> None:
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


def check_store(d: Checkup) -> None:
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


def check_systemd(d: Checkup) -> None:
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


def check_units(d: Checkup) -> None:
    scope = "user" if d.user else "system"
    found = {name: _find_unit(name, d.user) for name in UNIT_NAMES}
    missing = [n for n, p in found.items() if p is None]
    install = "`ipcd install-units --user`" if d.user else "`sudo ipcd install-units`"
    if len(missing) == len(UNIT_NAMES):
        other = "system" if d.user else "user"
        hint = f" (the {other} instance has them)" if any(_find_unit(n, not d.user) for n in UNIT_NAMES) else ""
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
            f"{', '.join(missing)} missing beside {found[next(n for n in UNIT_NAMES if found[n])]}",
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
    if protected and real and (real.startswith(PROTECT_HOME_DIRS) or exe.startswith(PROTECT_HOME_DIRS)):
        d.add(
            "units",
            "problem",
            f"{service}: ExecStart={exe} runs on {real or exe}, which ProtectHome=yes hides",
            "install ipcd in a venv outside /home and /root, made from /usr/bin/python3; or a drop-in with "
            "ProtectHome=read-only",
        )
        return
    d.add("units", "ok", f"{', '.join(str(p) for p in found.values())}; ExecStart={exe}")
