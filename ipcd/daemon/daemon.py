"""The running daemon: the order things start and stop in, signals, reload.

Start: both sockets (`instance`: adopted from systemd or bound here, with
the lock and the stale-socket probe), the log process (`logs.process`,
forked before any thread runs; it opens the store), key/value state and
channels, the control server, then READY=1.  The main thread then only waits: signal handlers set flags, and
the loop acts on them (SIGTERM/SIGINT: stop; SIGHUP: reload) and does the
periodic work (expiring keys, STATUS=, the watchdog through `health`).
Stop runs the start in reverse: STOPPING=1, stop accepting, read what is
queued on the log socket, answer what was read, close every client, commit,
unlink only the socket files ipcd created itself.  The command line is
`command`.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sqlite3
import threading
import time
from typing import Any

from ipcd import __version__, config
from ipcd.config import Config
from ipcd.control import methods as control_methods
from ipcd.control.access import make_policy
from ipcd.control.app import App
from ipcd.control.registry import Registry
from ipcd.control.server import ControlServer
from ipcd.daemon import metrics, trust
from ipcd.daemon.diagnostics import set_log_level
from ipcd.daemon.health import Health, Priority
from ipcd.daemon.instance import Instance, Paths
from ipcd.daemon.systemd import Notifier, watchdog_interval_s
from ipcd.errors import ConfigError, ReloadFailed, StartupError
from ipcd.logs import forward
from ipcd.logs import methods as log_methods
from ipcd.logs.process import LogProcess
from ipcd.logs.store import old_kv_rows
from ipcd.state import methods as state_methods
from ipcd.state.channels import Channels
from ipcd.state.kv import KvStore
from ipcd.state.kvdb import KV_DB_NAME, KvDb

log = logging.getLogger("ipcd")

STOP_GRACE_S = 5.0
REGISTRY = Registry.join([control_methods.METHODS, log_methods.METHODS, state_methods.METHODS, metrics.METHODS])


class Daemon:
    def __init__(
        self, cfg: Config, paths: Paths, notifier: Notifier | None = None, log_level: str | None = None
    ) -> None:
        self.cfg = cfg
        self.log_level = log_level  # `--log-level`: wins over `[daemon] log_level`, reloads included
        self.paths = paths
        self.notifier = notifier or Notifier()
        self.instance = Instance(paths, os.geteuid())
        self.app = App(cfg, make_policy(cfg.access, os.geteuid()), REGISTRY, lifecycle=self)
        self.app.config_path = str(paths.config_path) if paths.config_path else None
        self.health = Health(self.notifier, watchdog_interval_s(), self.app)
        self.priority = Priority()
        self.logs: LogProcess | None = None
        self.kvdb: KvDb | None = None
        self.kv: KvStore | None = None
        self.forward: forward.Engine | None = None
        self.metrics: metrics.Metrics | None = None
        self.failure: str | None = None  # why ipcd stops on its own (exit 1)
        self.control: ControlServer | None = None
        self._control_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._reload_lock = threading.Lock()

    # -- start -------------------------------------------------------------

    def start(self) -> None:
        _raise_nofile()
        limit_malloc_arenas(self.cfg.daemon.malloc_arenas)
        os.umask(0o077)  # every file ipcd makes is its own: the store, kv.db, the lock (sockets get their modes)
        listeners = self.instance.open(self.cfg)
        self.app.activation = self.instance.activation
        self.app.sockets.update({name: lst.path for name, lst in sorted(listeners.items())})
        self.app.add_section("watchdog", self.health.status)
        self.app.add_section("rates", self.health.rates)
        self.app.add_section("memory", self.health.memory)
        self._prepare_state_dir()
        kv_rows = old_kv_rows(self.paths.db)  # before the log process drops them from ipcd.db
        self._start_logs(listeners["log"].sock, owned=listeners["log"].bound is not None)
        self.forward = forward.start(self.cfg, self.paths.state_dir, self.logs, self.app)
        if self.forward is not None:
            self.health.watch(self.forward.problem)
        self._start_state(kv_rows)
        self._start_control(listeners["control"].sock)
        self.metrics = metrics.start(self.app, self.logs, self.cfg)
        log.info(
            "ipcd %s ready: control %s, log %s, store %s, activation %s (pid %d, log process %d)",
            __version__,
            self.app.sockets["control"],
            self.app.sockets["log"],
            self.paths.db,
            self.app.activation,
            os.getpid(),
            self.logs.pid if self.logs else 0,
        )
        self.notifier.ready(status=self.health.summary())

    def _prepare_state_dir(self) -> None:
        trust.private_dir(self.paths.state_dir, self.instance.uid)
        trust.store_files(self.paths.state_dir, self.instance.uid)

    def _start_logs(self, sock: Any, owned: bool) -> None:
        """Fork the log process: first of all, while this is the only thread."""
        self.logs = LogProcess(self.cfg, self.paths.db, sock, owned=owned, on_exit=self._log_process_ended)
        self.logs.start(close_in_child=[*self.instance.fds_except("log"), *self.notifier.fds()])
        self.logs.provide(self.app)
        self.health.logs = self.logs
        self.health.watch(self.logs.problem)

    def _start_state(self, kv_rows: list[tuple[Any, ...]]) -> None:
        path = str(self.paths.state_dir / KV_DB_NAME)
        try:
            self.kvdb = KvDb(path, self.cfg.kv.durability)
            if kv_rows:
                self.kvdb.import_rows(kv_rows)
                log.info("moved %d keys from %s to %s", len(kv_rows), self.paths.db, path)
        except sqlite3.Error as e:
            raise StartupError(f"cannot open the key/value store {path}: {e}") from None
        self.kv = KvStore(self.kvdb, self.cfg.kv)
        for problem in self.kv.skipped:
            log.error("key/value store: a key could not be loaded and was left out: %s", problem)
        self.kvdb.start()
        channels = Channels()
        self.app.provide(self.kv)
        self.app.provide(channels)
        self.app.add_section("kv", self.kv.status)
        self.app.add_section("channels", channels.status)

    def _start_control(self, sock: Any) -> None:
        self.control = ControlServer(sock, self.app)
        self.app.provide(self.control)  # for metrics: requests by method
        self._control_thread = threading.Thread(target=self.control.serve_forever, args=(0.1,), name="ipcd-control")
        self._control_thread.start()
        self.health.watch(self._control_problem)

    def _control_problem(self, stale_s: float) -> str | None:
        t, server = self._control_thread, self.control
        if t is None or server is None or not t.is_alive():
            return "thread ipcd-control is not running"
        idle = time.monotonic() - server.last_loop
        return f"the control server has not turned for {idle:.0f} s" if idle > stale_s else None

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

    def _log_process_ended(self, why: str | None) -> None:
        """The log process ended on its own: stop, and exit 1 if it died (`why`)."""
        self.failure = why
        self.request_stop()

    def run(self) -> None:
        watchdog_s = self.health.watchdog_s
        now = time.monotonic()
        next_status = now + self.cfg.daemon.status_interval_s
        next_ping = now if watchdog_s else float("inf")
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
            self.health.sample()
            self.priority.adjust(self.health.busy(), self.cfg.daemon.control_nice)
            now = time.monotonic()
            if now >= next_ping:
                self.health.tick()
                next_ping = now + (watchdog_s or 1.0)
            if now >= next_status:
                self.notifier.status(self.health.summary())
                next_status = now + self.cfg.daemon.status_interval_s

    def reload(self) -> dict[str, Any]:
        """Re-read the config; on any error keep the old one and say why."""
        with self._reload_lock:
            self.notifier.reloading()
            src = self.paths.config_path
            try:
                new = config.load(src, self.paths.config_named)
                policy = make_policy(new.access, self.instance.uid)
            except ConfigError as e:
                log.error("reload failed, keeping the old config: %s", e)
                self.notifier.ready(status=f"reload failed, old config kept: {e}")
                raise ReloadFailed(f"reload failed, old config kept: {e}", {"config": str(src)}) from None
            self._apply(new)
            self.app.policy = policy
            log.info("reloaded config from %s", src if src and src.exists() else "defaults")
            self.notifier.ready(status=self.health.summary())
            exists = bool(src and src.exists())
            return {"reloaded": True, "config": str(src) if src else None, "config_exists": exists}

    def _apply(self, new: Config) -> None:
        self.cfg = new
        self.app.config = new
        level = self.log_level or new.daemon.log_level
        set_log_level(level)
        if self.logs is not None:
            self.logs.configure(new, level)
        forward.reload(self.forward, new)
        metrics.reload(self.metrics, new)
        if self.kv is not None and self.kvdb is not None:
            self.kv.cfg = new.kv
            self.kvdb.set_durability(new.kv.durability)
        self.instance.apply_modes(new)

    # -- stop --------------------------------------------------------------

    def stop(self, quiet: bool = False) -> None:
        if not quiet:
            self.notifier.stopping(status="stopping: answering what was asked, storing what was sent")
        done = threading.Event()
        if self.notifier.enabled and not quiet:
            # EXTEND_TIMEOUT_USEC while the drain runs: a long one is not a hang.
            threading.Thread(target=self._extend_while, args=(done,), daemon=True).start()
        try:
            self._stop_parts()
        finally:
            done.set()
        if not quiet:
            log.info("ipcd stopped")

    def _extend_while(self, done: threading.Event) -> None:
        while not done.wait(1.0):
            self.notifier.extend_timeout(5.0)

    def _stop_parts(self) -> None:
        metrics.stop(self.metrics)
        if self.control is not None:
            self.control.shutdown()  # serve_forever returns: no more accepts
            self.instance.unlink("control")
        if self.logs is not None:
            self.instance.unlink("log")  # new senders now fail at once
            n = self.logs.stop()  # what was sent before is still read and kept
            if n:
                log.info("read %d queued datagrams from the log socket before stopping", n)
        if self.control is not None:
            self.control.stop(grace_s=STOP_GRACE_S)  # answers what was asked, kv writes included
        if self._control_thread is not None:
            self._control_thread.join()
        if self.kvdb is not None:
            self.kvdb.close()
        forward.stop(self.forward)
        if self.logs is not None:
            self.logs.close()
        self.instance.close()
        self.notifier.close()


def _raise_nofile() -> None:
    # A connection is a descriptor: let max_connections, not the soft limit, decide.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))
        except (ValueError, OSError):
            pass


M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(n: int) -> bool:
    """At most `n` glibc malloc arenas (0: glibc's default, 8 per core); whether it applied.

    Each thread that mallocs may otherwise get an arena of its own, and what
    it frees stays there for that arena's next use: parsing a large request
    (its objects up to 25 times its size) on one connection thread, then on
    another, grows the process by each.  Measured under every attack of
    tests/test_security_memory.py at once: 491 MiB peak with glibc's
    default, 262 MiB with 2.  Set before the threads start; the log process
    inherits it.
    """
    if n <= 0:
        return False
    import ctypes  # only here: the one call ipcd makes through it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no arenas to limit)
        return False
    return bool(mallopt(M_ARENA_MAX, n))
