"""`doctor`'s checks of what ipcctl can see from here: which socket, the config,
whether the daemon answers, the socket files and whether you may use them.

They run even when nobody answers, so that `doctor` is useful exactly when
ipcd is down.  The daemon is asked only through `ipcd.client`.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import time

from ipcd import client, config
from ipcd.client.resolve import SYSTEM_SOCKET
from ipcd.ctl.checkup import Checkup
from ipcd.errors import ConfigError

START = "start it: `systemctl start ipcd.socket ipcd-log.socket` (user instance: `systemctl --user start ...`), or run `ipcd`"


def check_socket(d: Checkup) -> None:
    try:
        d.path, tried = client.resolve_socket(d.socket_opt, d.user)
    except client.Unreachable as e:
        d.add("socket", "problem", f"no control socket found (tried {', '.join(e.tried)})", START)
        return
    how = "given" if d.socket_opt or os.environ.get("IPCD_SOCKET") or os.environ.get("IPCD_RUNTIME_DIR") else "found"
    d.add("socket", "ok", f"control socket {d.path} ({how}; looked at {', '.join(tried)})")


def check_trust(d: Checkup) -> None:
    """The path to the socket, checked as every client checks it (`ipcd.client.trust`) before a connect."""
    if d.path is None:
        return
    try:
        client.check_socket_path(d.path)
    except client.Untrusted as e:
        d.add("trust", "problem", f"refusing to connect: {e}", "see the message: nothing is sent through that path")
        d.path = None  # no check after this one connects through it
        return
    except FileNotFoundError:
        pass  # no socket there: `reachable` says so
    except OSError as e:
        d.add("trust", "warning", f"cannot check the path to {d.path}: {e.strerror or e}")
        return
    d.add("trust", "ok", f"every directory on the way to {d.path} is yours, root's or ipcd's, none writable by others")


def check_config(d: Checkup) -> None:
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


def check_reachable(d: Checkup) -> None:
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


def _lstat(d: Checkup, name: str, path: str) -> os.stat_result | None:
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


def check_control_file(d: Checkup) -> None:
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


def check_access(d: Checkup) -> None:
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


def check_log_socket(d: Checkup) -> None:
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
