"""The `ipcd` command: startup order, signals, reload, graceful stop.

Startup: resolve directories and load the config (a bad one exits 78,
EX_CONFIG), take the lock beside the sockets, adopt what systemd passed or
bind the rest, open the store, start the servers, then say READY=1.  The
main thread then only waits: signal handlers set flags, and the loop acts on
them (SIGTERM/SIGINT: stop; SIGHUP: reload) and does the periodic work
(STATUS=, the watchdog).  Stopping runs the startup in reverse: STOPPING=1,
stop accepting, answer what was read, close every client, drain the log
socket, commit, unlink only the socket files ipcd created itself.
"""

from __future__ import annotations

import fcntl
import grp
import logging
import os
import resource
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from . import __version__, config
from .access import make_policy
from .config import Config
from .errors import ConfigError, IpcdError, RpcError, StartupError
from . import logmethods  # noqa: F401  (registers logs.*)
from .logquery import FollowHub, Reader
from .logserver import Intake, LogServer
from .logstore import DB_NAME, Writer
from .methods import App
from .server import Bound, ControlServer, check_path_length, probe

log = logging.getLogger("ipcd")

EXIT_FAILURE = 1
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG; systemd shows it as "CONFIG"

CONTROL_NAME = "ipcd.sock"
LOG_NAME = "log.sock"
LOCK_NAME = "ipcd.lock"


class ReloadFailed(RpcError):
    code = -32005


@dataclass
class Paths:
    runtime_dir: Path
    state_dir: Path
    config_path: Path | None
    config_named: bool

    @classmethod
    def resolve(
        cls,
        runtime: str | None,
        state: str | None,
        config_file: str | None,
        env: dict[str, str] | os._Environ[str],
        uid: int,
    ) -> Paths:
        cfg_path, named = config.config_path(config_file, env, uid)
        return cls(config.runtime_dir(runtime, env, uid), config.state_dir(state, env, uid), cfg_path, named)

    @property
    def control(self) -> str:
        return str(self.runtime_dir / CONTROL_NAME)

    @property
    def log(self) -> str:
        return str(self.runtime_dir / LOG_NAME)


class Daemon:
    def __init__(self, cfg: Config, paths: Paths) -> None:
        self.cfg = cfg
        self.paths = paths
        self.uid = os.geteuid()
        self.app = App(config=cfg, policy=make_policy(cfg.access, self.uid))
        self.control: ControlServer | None = None
        self.logserver: LogServer | None = None
        self.writer: Writer | None = None
        self.reader: Reader | None = None
        self.intake: Intake | None = None
        self.bound: list[Bound] = []
        self._threads: list[threading.Thread] = []
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._reload_lock = threading.Lock()

    # -- start -------------------------------------------------------------

    def start(self) -> None:
        _raise_nofile()
        self._prepare_dirs()
        self._take_lock()
        self._open_store()
        self._start_log()
        self._start_control()
        log.info(
            "ipcd %s ready: control %s, log %s, store %s (pid %d)",
            __version__,
            self.app.sockets.get("control"),
            self.app.sockets.get("log"),
            self.db_path,
            os.getpid(),
        )

    def _prepare_dirs(self) -> None:
        for path in (self.paths.control, self.paths.log):
            check_path_length(path)  # before anything is created
        rd = self.paths.runtime_dir
        try:
            rd.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create runtime dir {rd}: {e.strerror}") from None
        st = rd.stat()
        if st.st_uid not in (self.uid, 0) or st.st_mode & 0o002:
            # /tmp/ipcd-$UID could have been made by someone else first.
            raise StartupError(
                f"runtime dir {rd} is owned by uid {st.st_uid} or writable by all: refusing to use it"
            )

    @property
    def db_path(self) -> str:
        return str(self.paths.state_dir / DB_NAME)

    def _open_store(self) -> None:
        sd = self.paths.state_dir
        try:
            sd.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create state dir {sd}: {e.strerror}") from None
        try:
            writer = Writer(self.db_path, self.cfg.store)
        except sqlite3.Error as e:
            raise StartupError(f"cannot open the store {self.db_path}: {e}") from None
        hub = FollowHub()
        writer.on_commit = hub.publish
        hub.on_change = lambda any_left: setattr(writer, "want_rows", any_left)
        self.writer, self.reader = writer, Reader(self.db_path)
        self.app.services.update(writer=writer, reader=self.reader, follow_hub=hub)
        self.app.sections["store"] = self._store_status

    def _store_status(self) -> dict[str, Any]:
        w = self.writer
        assert w is not None
        out: dict[str, Any] = {
            "path": self.db_path,
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
        path = self.paths.log
        self._check_free(path, socket.SOCK_DGRAM)
        self.intake = Intake(self.cfg.log, self.writer)
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

    def _control_mode(self) -> tuple[int, int]:
        """(mode, gid) of the control socket: DESIGN.md "Config"."""
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
        self._threads.append(t)

    # -- run ---------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop.set()
        self._wake.set()

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._reload_requested:
                self._reload_requested = False
                try:
                    self.reload()
                except ReloadFailed:
                    pass  # logged by reload()

    def reload(self) -> dict[str, Any]:
        """Re-read the config; on any error keep the old one and say why."""
        with self._reload_lock:
            src = self.paths.config_path
            try:
                new = config.load(src, self.paths.config_named)
                policy = make_policy(new.access, self.uid)
            except ConfigError as e:
                log.error("reload failed, keeping the old config: %s", e)
                raise ReloadFailed(f"reload failed, old config kept: {e}", {"config": str(src)}) from None
            self.cfg = new
            self.app.config = new
            self.app.policy = policy
            if self.intake is not None:
                self.intake.configure(new.log)
            if self.writer is not None:
                self.writer.cfg = new.store
            _set_log_level(new.daemon.log_level)
            log.info("reloaded config from %s", src if src and src.exists() else "defaults")
            return {"reloaded": True, "config": str(src) if src else None}

    # -- stop --------------------------------------------------------------

    def stop(self, quiet: bool = False) -> None:
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
            self.control.stop(grace_s=5.0)
        for t in self._threads:
            t.join()
        if self.writer is not None:
            self.writer.close()
        if self.reader is not None:
            self.reader.close()
        self.close()
        if not quiet:
            log.info("ipcd stopped")

    def _unlink(self, path: str | None) -> None:
        for b in self.bound:
            if b.path == path:
                b.unlink_if_ours()

    def close(self) -> None:
        for b in self.bound:
            b.unlink_if_ours()
        self.bound.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# -- helpers -----------------------------------------------------------------


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _who_answers(path: str) -> str:
    """The pid of the ipcd at `path`, from its `status`, for the error message."""
    from . import jsonrpc

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


class _JournalFormatter(logging.Formatter):
    # sd-daemon(3): a "<N>" prefix gives journald the syslog priority.
    PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{self.PRIORITY.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s ipcd[%(process)d]: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    _set_log_level(level)


def _set_log_level(level: str) -> None:
    log.setLevel(level.upper())


def run(runtime: str | None, state: str | None, config_file: str | None, log_level: str | None) -> int:
    env = os.environ
    setup_logging(log_level or "info")
    try:
        paths = Paths.resolve(runtime, state, config_file, env, os.geteuid())
        cfg = config.load(paths.config_path, paths.config_named)
        if log_level is None:
            _set_log_level(cfg.daemon.log_level)
        d = Daemon(cfg, paths)
    except ConfigError as e:
        log.error("config error: %s", e)
        return EXIT_CONFIG
    try:
        d.install_signals()
        d.start()
    except (IpcdError, OSError) as e:
        log.error("cannot start: %s", e)
        d.stop(quiet=True)
        return EXIT_FAILURE
    except Exception:
        log.exception("cannot start: unexpected error")
        d.stop(quiet=True)
        return EXIT_FAILURE
    d.run()
    d.stop()
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ipcd")
@click.option("--runtime-dir", metavar="DIR", help="Where the sockets go [default: see README].")
@click.option("--state-dir", metavar="DIR", help="Where the store goes.")
@click.option("--config", "config_file", metavar="FILE", help="Config file (must exist).")
@click.option("--log-level", type=click.Choice(config.LOG_LEVELS), help="Overrides daemon.log_level.")
@click.option("--check-config", is_flag=True, help="Load the config, print the effective settings, exit.")
def cli(
    runtime_dir: str | None,
    state_dir: str | None,
    config_file: str | None,
    log_level: str | None,
    check_config: bool,
) -> None:
    """ipcd: a local IPC daemon (control and log sockets), in the foreground."""
    if check_config:
        sys.exit(_check_config(runtime_dir, state_dir, config_file))
    sys.exit(run(runtime_dir, state_dir, config_file, log_level))


def _check_config(runtime: str | None, state: str | None, config_file: str | None) -> int:
    import json

    paths = Paths.resolve(runtime, state, config_file, os.environ, os.geteuid())
    try:
        cfg = config.load(paths.config_path, paths.config_named)
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


def main() -> None:
    cli()
