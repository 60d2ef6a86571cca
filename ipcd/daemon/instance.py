"""One ipcd per runtime dir, and its two listening sockets.

`Paths` are the directories DESIGN.md's rules pick.  `Instance.listeners()`
returns both sockets, each adopted from systemd (`systemd.adopt_sockets`)
or bound here: then the runtime dir is checked, the lock beside the sockets
taken (two daemons starting at once cannot both win), and an existing file
at the path probed first (a live ipcd: refuse; a stale socket: replace; not
a socket: refuse).  It remembers which files it made, so that `unlink`
never removes one systemd owns.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ipcd import config
from ipcd.config import Config
from ipcd.daemon.binding import Bound, bind_unix, check_path_length, probe
from ipcd.daemon.systemd import ActivationError, adopt_sockets, socket_path
from ipcd.daemon.trust import trusted_dir
from ipcd.errors import AlreadyRunning, IpcdError, StartupError
from ipcd.logs.store import DB_NAME

log = logging.getLogger("ipcd")

LOCK_NAME = "ipcd.lock"
KINDS = {"control": socket.SOCK_STREAM, "log": socket.SOCK_DGRAM}
OUTLIVE_S = 10.0  # how long a killed ipcd's log process may take to finish


@dataclass
class Paths:
    runtime_dir: Path
    state_dir: Path
    config_path: Path | None
    config_named: bool

    @classmethod
    def resolve(
        cls, runtime: str | None, state: str | None, config_file: str | None, env: Mapping[str, str], uid: int
    ) -> Paths:
        cfg_path, named = config.config_path(config_file, env, uid)
        return cls(config.runtime_dir(runtime, env, uid), config.state_dir(state, env, uid), cfg_path, named)

    @property
    def control(self) -> str:
        return str(self.runtime_dir / config.CONTROL_SOCKET_NAME)

    @property
    def log(self) -> str:
        return str(self.runtime_dir / config.LOG_SOCKET_NAME)

    @property
    def db(self) -> str:
        return str(self.state_dir / DB_NAME)


@dataclass
class Listener:
    """A listening socket and where it is; `bound` is the file ipcd made (None: systemd's)."""

    sock: socket.socket
    path: str
    bound: Bound | None


class Instance:
    def __init__(self, paths: Paths, uid: int) -> None:
        self.paths = paths
        self.uid = uid
        self.activation = "self"
        self.listeners: dict[str, Listener] = {}
        self._lock_fd: int | None = None

    def open(self, cfg: Config) -> dict[str, Listener]:
        """Both sockets, adopted or bound (DESIGN.md "systemd integration", "Stale sockets")."""
        try:
            adopted = adopt_sockets()
        except ActivationError as e:
            raise StartupError(f"socket activation: {e}") from None
        self.activation = "systemd" if adopted else "self"
        for name, sock in adopted.items():
            self.listeners[name] = Listener(sock, socket_path(sock), None)
        missing = [name for name in KINDS if name not in adopted]
        if missing:  # ipcd binds at least one socket itself
            for name in missing:
                check_path_length(self._path(name))  # before anything is created
            self._prepare_runtime_dir()
            self._take_lock()
        for name in missing:
            self.listeners[name] = self._bind(name, cfg)
        return self.listeners

    def _path(self, name: str) -> str:
        return self.paths.control if name == "control" else self.paths.log

    def _prepare_runtime_dir(self) -> None:
        # 0755: other users reach the sockets (their own modes say who may use them).
        trusted_dir(self.paths.runtime_dir, self.uid, 0o755)

    def _take_lock(self) -> None:
        """One ipcd per runtime dir: an flock(2) held for the daemon's life.

        The file stays after exit (unlinking a lock file races with the next
        daemon opening it); the kernel drops the lock when the process dies.
        """
        path = self.paths.runtime_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StartupError(f"cannot open lock file {path}: {e.strerror}", e.errno or errno.EIO) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"ipcd is already running on {self.paths.runtime_dir} (pid {other or 'unknown'}); "
                "stop it first, or choose another --runtime-dir",
                other,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _bind(self, name: str, cfg: Config) -> Listener:
        path, kind = self._path(name), KINDS[name]
        state = probe(path, kind)
        if state == "live" and name == "log":
            state = self._outlive(path, kind)
        if state == "live":
            raise AlreadyRunning(f"ipcd is already running: {path} answers ({_who_answers(path)})")
        if state == "other":
            raise StartupError(f"{path} exists and is not a socket ipcd can replace; remove it", errno.EEXIST)
        if state == "stale":
            log.info("replacing stale socket %s (nothing listens on it)", path)
        if name == "control":
            mode, gid = control_mode(cfg, self.uid)
            backlog: int | None = socket.SOMAXCONN  # DESIGN.md: as systemd's Backlog= default
        else:
            mode, gid, backlog = cfg.log.socket_mode, -1, None
        sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        try:
            bound = bind_unix(sock, path, mode, gid, backlog)
        except PermissionError as e:
            sock.close()
            raise StartupError(f"cannot bind {path}: {e.strerror}", errno.EACCES) from None
        except BaseException:
            sock.close()
            raise
        return Listener(sock, path, bound)

    def _outlive(self, path: str, kind: int) -> str:
        """Wait a little for a live log socket to go: holding the lock, this instance is the
        only ipcd here, so what answers is the log process of one that was just killed,
        still storing what was queued before it exits."""
        deadline = time.monotonic() + OUTLIVE_S
        state = "live"
        while state == "live" and time.monotonic() < deadline:
            time.sleep(0.02)
            state = probe(path, kind)
        if state != "live":
            log.info("the previous ipcd's log process has finished with %s", path)
        return state

    def apply_modes(self, cfg: Config) -> None:
        """A reload's socket modes, on the files ipcd made (systemd's are the .socket units')."""
        for name, lst in self.listeners.items():
            if lst.bound is None:
                continue
            try:
                if name == "control":
                    mode, gid = control_mode(cfg, self.uid)
                    os.chown(lst.path, -1, gid)
                    os.chmod(lst.path, mode)
                else:
                    os.chmod(lst.path, cfg.log.socket_mode)
            except OSError as e:
                log.warning("cannot change the mode of %s: %s", lst.path, e.strerror)

    def fds_except(self, name: str) -> list[int]:
        """The descriptors this instance holds but the `name` listener's (for a child to close)."""
        fds = [lst.sock.fileno() for n, lst in self.listeners.items() if n != name]
        return fds + ([self._lock_fd] if self._lock_fd is not None else [])

    def unlink(self, name: str) -> None:
        """Remove the socket file, if ipcd made it and it is still the one it made."""
        lst = self.listeners.get(name)
        if lst is not None and lst.bound is not None:
            lst.bound.unlink_if_ours()

    def close(self) -> None:
        for name in self.listeners:
            self.unlink(name)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def control_mode(cfg: Config, uid: int) -> tuple[int, int]:
    """(mode, gid) of a self-bound control socket: DESIGN.md "Config"."""
    c = cfg.control
    try:
        return c.socket_mode, grp.getgrnam(c.socket_group).gr_gid
    except KeyError:
        pass
    if "control.socket_mode" in cfg.explicit:
        return c.socket_mode, -1
    log.warning(
        "group %r does not exist, so the control socket is 0600 (only uid %d and root can use it); "
        "create the group (groupadd --system %s) and restart, or set control.socket_mode",
        c.socket_group,
        uid,
        c.socket_group,
    )
    return 0o600, -1


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _who_answers(path: str) -> str:
    """The pid of the ipcd at `path`, from its `status`, for the error message."""
    from ipcd.client import Client

    try:
        with Client(path, timeout_s=2.0) as c:
            return f"pid {c.status()['pid']}"
    except (IpcdError, OSError, ValueError, KeyError, TypeError):
        return "not an ipcd that answers status"
