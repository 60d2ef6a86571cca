"""Finding the daemon's sockets, connecting, and saying what went wrong.

DESIGN.md "Socket resolution in ipcctl": `--socket` > $IPCD_SOCKET >
$IPCD_RUNTIME_DIR/ipcd.sock > with `user`, the user instance's (in
$XDG_RUNTIME_DIR/ipcd, for root too); else the system instance's if it
exists, else the user instance's if that exists.
The log socket is `--log-socket` > $IPCD_LOG_SOCKET > log.sock beside the
control socket.  `explain` turns an `OSError` on either socket into an
`Unreachable` or `AccessDenied` that names the socket and says what to do.
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
from collections.abc import Mapping

from ipcd import dirs
from ipcd.client.errors import AccessDenied, Unreachable
from ipcd.client.trust import check_socket_path

SYSTEM_SOCKET = str(dirs.SYSTEM_RUNTIME_DIR / dirs.CONTROL_SOCKET_NAME)
START_HINT = "start it with `systemctl start ipcd` (or `systemctl --user start ipcd`), or run `ipcd`"


def user_socket(env: Mapping[str, str], uid: int) -> str:
    """The user instance's control socket: where `ipcd` run by `uid` binds it."""
    user_env = {k: v for k, v in env.items() if k == "XDG_RUNTIME_DIR"}
    return str(dirs.runtime_dir(None, user_env, uid) / dirs.CONTROL_SOCKET_NAME)


def resolve_socket(
    path: str | None = None,
    user: bool = False,
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
) -> tuple[str, tuple[str, ...]]:
    """(the control socket to use, the paths looked at).

    `--socket` > $IPCD_SOCKET > $IPCD_RUNTIME_DIR/ipcd.sock > with `user`,
    the user instance's; else /run/ipcd/ipcd.sock if it exists, else the
    user instance's if that exists.  Raises `Unreachable` if none exists.
    """
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    for p in (path, env.get("IPCD_SOCKET")):
        if p:
            return p, (p,)
    if env.get("IPCD_RUNTIME_DIR"):
        p = os.path.join(env["IPCD_RUNTIME_DIR"], dirs.CONTROL_SOCKET_NAME)
        return p, (p,)
    mine = user_socket(env, uid)
    if user:  # the user manager's instance (systemd/user: %t/ipcd), root's too
        xdg = env.get("XDG_RUNTIME_DIR")
        p = os.path.join(xdg, "ipcd", dirs.CONTROL_SOCKET_NAME) if xdg else mine
        return p, (p,)
    tried = (SYSTEM_SOCKET,) if mine == SYSTEM_SOCKET else (SYSTEM_SOCKET, mine)
    for p in tried:
        if os.path.exists(p):
            return p, tried
    raise Unreachable(f"no ipcd socket found (tried {', '.join(tried)}): is ipcd running? {START_HINT}", None, tried)


def resolve_log_socket(
    path: str | None = None,
    control: str | None = None,
    user: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """`--log-socket` > $IPCD_LOG_SOCKET > log.sock beside the control socket."""
    env = os.environ if env is None else env
    if path or env.get("IPCD_LOG_SOCKET"):
        return path or env["IPCD_LOG_SOCKET"]
    if control is None:
        control, _ = resolve_socket(None, user, env)
    return os.path.join(os.path.dirname(control), dirs.LOG_SOCKET_NAME)


def connect(path: str, timeout_s: float | None) -> socket.socket:
    """A stream socket connected to `path`, once its path is trusted (`trust`); a failure is raised as `explain` says."""
    try:
        check_socket_path(path)
    except OSError as e:
        raise explain(e, path) from None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout_s)
    try:
        s.connect(path)
    except BaseException as e:
        s.close()
        raise explain(e, path) from None
    return s


def explain(e: BaseException, path: str) -> BaseException:
    """The client's error for `e` on the socket at `path` (`e` itself if it is no socket error)."""
    if isinstance(e, FileNotFoundError):
        return Unreachable(f"no socket at {path}: is ipcd running? {START_HINT}", path)
    if isinstance(e, ConnectionRefusedError):
        return Unreachable(f"connection refused on {path}: stale socket, the daemon is down; {START_HINT}", path)
    if isinstance(e, PermissionError):
        return AccessDenied(
            f"permission denied on {path}: join group ipcd (`sudo usermod -aG ipcd {_user()}`, "
            "then log in again), or use sudo"
        )
    if isinstance(e, (socket.timeout, TimeoutError)):
        return Unreachable(f"no answer from {path} in time (is ipcd stuck? see `systemctl status ipcd`)", path)
    if isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.EPIPE):
        return Unreachable(f"ipcd closed the connection on {path}", path)
    if isinstance(e, OSError):
        return Unreachable(f"cannot reach ipcd at {path}: {e.strerror or e}", path)
    return e


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "$USER"
