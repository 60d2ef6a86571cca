"""The running daemon: startup order, signals, reload, watchdog, graceful stop.

Startup: adopt what systemd passed (`systemd.adopt_sockets`), take the lock
beside the sockets if ipcd binds any itself, open the store, start the log
thread (reader and store writer) and the control server, then READY=1.  The
main thread then only waits: signal handlers set flags, and the loop acts on
them (SIGTERM/SIGINT: stop; SIGHUP: reload) and does the periodic work
(STATUS=, WATCHDOG=1 while the health check passes).  Stopping runs the
startup in reverse: STOPPING=1, stop accepting, read what is queued on the
log socket, answer what was read, close every client, commit, unlink only
the socket files ipcd created itself.  The `ipcd` command line is `command`.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import resource
import signal
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipcd import __version__, config
from ipcd.config import Config
from ipcd.control.access import make_policy
from ipcd.control.registry import App
from ipcd.control.server import ControlServer
from ipcd.daemon.binding import Bound, adopt, check_path_length, probe
from ipcd.daemon.systemd import ActivationError, Notifier, adopt_sockets, socket_path, watchdog_interval_s
from ipcd.errors import ConfigError, ReloadFailed, StartupError
from ipcd.logs import methods as logmethods  # noqa: F401  (these register their methods)
from ipcd.logs.query import FollowHub, Reader
from ipcd.logs.server import Intake, LogServer
from ipcd.logs.store import DB_NAME, Writer
from ipcd.state import methods as kvmethods  # noqa: F401  (these register their methods)
from ipcd.state.channels import Channels
from ipcd.state.kv import KvStore

log = logging.getLogger("ipcd")

CONTROL_NAME = "ipcd.sock"
LOG_NAME = "log.sock"
LOCK_NAME = "ipcd.lock"
STOP_GRACE_S = 5.0


@dataclass
class Paths:
    runtime_dir: Path
    state_dir: Path
    config_path: Path | None
    config_named: bool

    @classmethod
    def resolve(cls, runtime: str | None, state: str | None, config_file: str | None, env: Any, uid: int) -> Paths:
        cfg_path, named = config.config_path(config_file, env, uid)
        return cls(config.runtime_dir(runtime, env, uid), config.state_dir(state, env, uid), cfg_path, named)

    @property
    def control(self) -> str:
        return str(self.runtime_dir / CONTROL_NAME)

    @property
    def log(self) -> str:
        return str(self.runtime_dir / LOG_NAME)

    @property
    def db(self) -> str:
        return str(self.state_dir / DB_NAME)


class Daemon:
    def __init__(self, cfg: Config, paths: Paths, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.paths = paths
        self.uid = os.geteuid()
        self.notifier = notifier or Notifier()
        self.app = App(config=cfg, policy=make_policy(cfg.access, self.uid))
        self.control: ControlServer | None = None
        self.logserver: LogServer | None = None
        self.writer: Writer | None = None
        self.reader: Reader | None = None
        self.intake: Intake | None = None
        self.kv: KvStore | None = None
        self.channels = Channels()
        self.adopted: dict[str, socket.socket] = {}
        self.bound: list[Bound] = []
        self._threads: dict[str, threading.Thread] = {}
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._reload_lock = threading.Lock()
        self.watchdog_s = watchdog_interval_s()  # ping interval: half of WATCHDOG_USEC
        self.watchdog_pings = 0
        self._last_received = 0
        self._last_rate_at = time.monotonic()
        self.rate = 0.0

    # -- start -------------------------------------------------------------

    def start(self) -> None:
        _raise_nofile()
        try:
            self.adopted = adopt_sockets()
        except ActivationError as e:
            raise StartupError(f"socket activation: {e}") from None
        self.app.activation = "systemd" if self.adopted else "self"
        self.app.sections["watchdog"] = self._watchdog_status
        if len(self.adopted) < 2:  # ipcd binds at least one socket itself
            self._prepare_runtime_dir()
            self._take_lock()
        self._open_store()
        self._start_log()
        self._start_control()
        log.info(
            "ipcd %s ready: control %s, log %s, store %s, activation %s (pid %d)",
            __version__,
            self.app.sockets.get("control"),
            self.app.sockets.get("log"),
            self.paths.db,
            self.app.activation,
            os.getpid(),
        )
        self.notifier.ready(status=self.summary())

    def _prepare_runtime_dir(self) -> None:
        for name in ("control", "log"):
            if name not in self.adopted:
                check_path_length(getattr(self.paths, name))  # before anything is created
        rd = self.paths.runtime_dir
        try:
            rd.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create runtime dir {rd}: {e.strerror}") from None
        st = rd.stat()
        if st.st_uid not in (self.uid, 0) or st.st_mode & 0o002:
            # /tmp/ipcd-$UID could have been made by someone else first.
            raise StartupError(f"runtime dir {rd} is owned by uid {st.st_uid} or writable by all: refusing to use it")

    def _take_lock(self) -> None:
        """One ipcd per runtime dir: an flock(2) held for the daemon's life.

        The file stays after exit (unlinking a lock file races with the next
        daemon opening it); the kernel drops the lock when the process dies.
        """
        path = self.paths.runtime_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StartupError(f"cannot open lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise StartupError(
                f"ipcd is already running on {self.paths.runtime_dir} (pid {other or 'unknown'}); "
                "stop it first, or choose another --runtime-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _check_free(self, path: str, kind: int) -> None:
        state = probe(path, kind)
        if state == "live":
            raise StartupError(f"ipcd is already running: {path} answers ({_who_answers(path)})")
        if state == "other":
            raise StartupError(f"{path} exists and is not a socket ipcd can replace; remove it")
        if state == "stale":
            log.info("replacing stale socket %s (nothing listens on it)", path)

    def _open_store(self) -> None:
        sd = self.paths.state_dir
        try:
            sd.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create state dir {sd}: {e.strerror}") from None
        try:
            writer = Writer(self.paths.db, self.cfg.store)
        except sqlite3.Error as e:
            raise StartupError(f"cannot open the store {self.paths.db}: {e}") from None
        hub = FollowHub()
        writer.on_commit = hub.publish
        self.writer, self.reader = writer, Reader(self.paths.db)
        self.kv = KvStore(writer, self.reader, self.cfg.kv)
        self.app.services.update(writer=writer, reader=self.reader, follow_hub=hub, kv=self.kv, channels=self.channels)
        self.app.sections["store"] = self._store_status
        self.app.sections["kv"] = self.kv.status
        self.app.sections["channels"] = self.channels.status

    def _store_status(self) -> dict[str, Any]:
        w = self.writer
        assert w is not None
        out: dict[str, Any] = {
            "path": self.paths.db,
            "bytes": w.file_bytes(),
            "entries": w.entries,
            "commits": w.commits,
            "deleted": w.deleted,
            "writer": "dead" if w.dead else ("failing" if w.error else "ok"),
        }
        if w.error or w.dead:
            out["error"] = w.dead or w.error
        return out

    def _start_log(self) -> None:
        assert self.writer is not None
        self.intake = Intake(self.cfg.log, self.writer)
        sock = self.adopted.get("log")
        if sock is not None:
            server = LogServer("", self.intake, bind_and_activate=False)
            adopt(server, sock)
            server.setup_socket(None)  # systemd's ReceiveBuffer= decides the size
            path = socket_path(sock)
        else:
            path = self.paths.log
            self._check_free(path, socket.SOCK_DGRAM)
            try:
                server = LogServer(path, self.intake, mode=self.cfg.log.socket_mode)
            except PermissionError as e:
                raise StartupError(f"cannot bind {path}: {e.strerror}") from None
            assert server.bound is not None
            self.bound.append(server.bound)
        self.logserver = server
        self.app.sockets["log"] = path
        self.app.sections["logs"] = self.intake.status
        self._spawn("ipcd-log", server.serve_forever, 0.5)

    def _control_mode(self) -> tuple[int, int]:
        """(mode, gid) of a self-bound control socket: DESIGN.md "Config"."""
        c = self.cfg.control
        try:
            return c.socket_mode, grp.getgrnam(c.socket_group).gr_gid
        except KeyError:
            pass
        if "control.socket_mode" in self.cfg.explicit:
            return c.socket_mode, -1
        log.warning(
            "group %r does not exist, so the control socket is 0600 (only uid %d and root can use it); "
            "create the group (groupadd --system %s) and restart, or set control.socket_mode",
            c.socket_group,
            self.uid,
            c.socket_group,
        )
        return 0o600, -1

    def _start_control(self) -> None:
        sock = self.adopted.get("control")
        if sock is not None:
            server = ControlServer("", self.app, bind_and_activate=False)
            adopt(server, sock)
            path = socket_path(sock)
            server.server_address = path
        else:
            path = self.paths.control
            self._check_free(path, socket.SOCK_STREAM)
            mode, gid = self._control_mode()
            try:
                server = ControlServer(path, self.app, mode=mode, gid=gid)
            except PermissionError as e:
                raise StartupError(f"cannot bind {path}: {e.strerror}") from None
            assert server.bound is not None
            self.bound.append(server.bound)
        self.control = server
        self.app.sockets["control"] = path
        self.app.live = server.live  # type: ignore[assignment]
        self.app.request_shutdown = self.request_stop
        self.app.reload = self.reload
        self._spawn("ipcd-control", server.serve_forever, 0.1)

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name)
        t.start()
        self._threads[name] = t

    # -- run ---------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self.request_stop()

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        now = time.monotonic()
        next_status = now + self.cfg.daemon.status_interval_s
        next_ping = now if self.watchdog_s else float("inf")
        while not self._stop.is_set():
            self._wake.wait(max(0.0, min(next_status, next_ping, now + 1.0) - now))
            self._wake.clear()
            if self._reload_requested:
                self._reload_requested = False
                try:
                    self.reload()
                except ReloadFailed:
                    pass  # logged and notified by reload()
            if self.kv is not None:
                self.kv.purge_expired()
            now = time.monotonic()
            if now >= next_ping:
                problem = self.health()
                if problem is None:
                    self.notifier.watchdog()
                    self.watchdog_pings += 1
                elif self.watchdog_pings >= 0:
                    log.error("watchdog: not pinging systemd: %s", problem)
                    self.watchdog_pings = -1  # reported once, until healthy again
                next_ping = now + (self.watchdog_s or 1.0)
            if now >= next_status:
                self.notifier.status(self.summary())
                next_status = now + self.cfg.daemon.status_interval_s

    def summary(self) -> str:
        """The one-line STATUS=: clients, messages/s, drops."""
        now = time.monotonic()
        received = self.intake.received if self.intake else 0
        if now - self._last_rate_at >= 0.5:
            self.rate = (received - self._last_received) / (now - self._last_rate_at)
            self._last_received, self._last_rate_at = received, now
        conns = self.app.connections["active"]
        dropped = self.writer.dropped if self.writer else 0
        text = f"{conns} clients, {self.rate:.0f} msg/s, {received} received, {dropped} dropped"
        if self.writer is not None and (self.writer.error or self.writer.dead):
            text += f"; STORE FAILING: {self.writer.dead or self.writer.error}"
        return text

    def health(self) -> str | None:
        """None while every part is alive and making progress (or idle)."""
        stale_s = max(2 * (self.watchdog_s or 1.0), 2.0)  # the whole WATCHDOG_USEC
        now = time.monotonic()
        if self.writer is not None and self.writer.dead:
            return f"the store writer died: {self.writer.dead}"
        for name in ("ipcd-control", "ipcd-log"):
            t = self._threads.get(name)
            if t is None or not t.is_alive():
                return f"thread {name} is not running"
        if self.control is not None and now - self.control.last_loop > stale_s:
            return f"the control server has not turned for {now - self.control.last_loop:.0f} s"
        if self.logserver is not None and now - self.logserver.last_progress > stale_s:
            return f"the log reader and store writer have been stuck for {now - self.logserver.last_progress:.0f} s"
        return None

    def _watchdog_status(self) -> dict[str, Any]:
        if not self.watchdog_s:
            return {"enabled": False}
        problem = self.health()
        return {
            "enabled": True,
            "interval_s": self.watchdog_s,
            "healthy": problem is None,
            "problem": problem,
            "pings": max(self.watchdog_pings, 0),
        }

    def reload(self) -> dict[str, Any]:
        """Re-read the config; on any error keep the old one and say why."""
        with self._reload_lock:
            self.notifier.reloading()
            src = self.paths.config_path
            try:
                new = config.load(src, self.paths.config_named)
                policy = make_policy(new.access, self.uid)
            except ConfigError as e:
                log.error("reload failed, keeping the old config: %s", e)
                self.notifier.ready(status=f"reload failed, old config kept: {e}")
                raise ReloadFailed(f"reload failed, old config kept: {e}", {"config": str(src)}) from None
            self._apply(new)
            self.app.policy = policy
            log.info("reloaded config from %s", src if src and src.exists() else "defaults")
            self.notifier.ready(status=self.summary())
            return {"reloaded": True, "config": str(src) if src else None, "config_exists": bool(src and src.exists())}

    def _apply(self, new: Config) -> None:
        self.cfg = new
        self.app.config = new
        _set_log_level(new.daemon.log_level)
        if self.intake is not None:
            self.intake.configure(new.log)
        if self.writer is not None:
            self.writer.cfg = new.store
        if self.kv is not None:
            self.kv.cfg = new.kv
        # Socket modes, on the files ipcd made (systemd's are set by the .socket unit).
        for b in self.bound:
            try:
                if b.path == self.app.sockets.get("control"):
                    mode, gid = self._control_mode()
                    os.chown(b.path, -1, gid)
                    os.chmod(b.path, mode)
                elif b.path == self.app.sockets.get("log"):
                    os.chmod(b.path, new.log.socket_mode)
            except OSError as e:
                log.warning("cannot change the mode of %s: %s", b.path, e.strerror)

    # -- stop --------------------------------------------------------------

    def stop(self, quiet: bool = False) -> None:
        if not quiet:
            self.notifier.stopping(status="stopping: answering what was asked, storing what was sent")
        done = threading.Event()
        if self.notifier.enabled and not quiet:
            # EXTEND_TIMEOUT_USEC while the drain runs: a long one is not a hang.
            threading.Thread(target=self._extend_while, args=(done,), daemon=True).start()
        try:
            self._stop_servers()
        finally:
            done.set()
        if not quiet:
            log.info("ipcd stopped")

    def _extend_while(self, done: threading.Event) -> None:
        while not done.wait(1.0):
            self.notifier.extend_timeout(5.0)

    def _stop_servers(self) -> None:
        if self.control is not None:
            self.control.shutdown()  # serve_forever returns: no more accepts
            self._unlink(self.app.sockets.get("control"))
        if self.logserver is not None:
            self.logserver.shutdown()
            self._unlink(self.app.sockets.get("log"))  # new senders now fail at once
            n = self.logserver.drain()  # what was sent before is still read and kept
            if n:
                log.info("read %d queued datagrams from the log socket before stopping", n)
            self.logserver.server_close()
        if self.control is not None:
            self.control.stop(grace_s=STOP_GRACE_S)
        for t in self._threads.values():
            t.join()
        if self.writer is not None:
            self.writer.close()
        if self.reader is not None:
            self.reader.close()
        self.close()

    def _unlink(self, path: str | None) -> None:
        for b in self.bound:
            if b.path == path:
                b.unlink_if_ours()

    def close(self) -> None:
        for b in self.bound:
            b.unlink_if_ours()  # never a path systemd bound: those are not in self.bound
        self.bound.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.notifier.close()


# -- helpers -----------------------------------------------------------------


def startup_errno(e: BaseException) -> int:
    """The errno= systemd shows for a failed start."""
    if isinstance(e, OSError) and e.errno:
        return e.errno
    text = str(e)
    if "already running" in text:
        return errno.EADDRINUSE
    if "too long" in text or "107" in text:
        return errno.ENAMETOOLONG
    return errno.EINVAL


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _who_answers(path: str) -> str:
    """The pid of the ipcd at `path`, from its `status`, for the error message."""
    from ipcd.wire import jsonrpc

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(jsonrpc.encode(jsonrpc.request("status", req_id=1)))
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return f"pid {jsonrpc.loads(data)['result']['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "not an ipcd that answers status"


def _raise_nofile() -> None:
    # A connection is a descriptor: let max_connections, not the soft limit, decide.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))
        except (ValueError, OSError):
            pass


def _set_log_level(level: str) -> None:
    log.setLevel(level.upper())
