"""systemd's side of the contract: socket activation, notify, watchdog.

Nothing here imports the rest of ipcd, and nothing here does anything
outside systemd: without LISTEN_FDS there is nothing to adopt, without
NOTIFY_SOCKET `Notifier` sends nothing, without WATCHDOG_USEC there is no
watchdog.

- `adopt_sockets` does what sd_listen_fds(3) does: check LISTEN_PID, take
  the fds from 3 (SD_LISTEN_FDS_START), unset LISTEN_PID/LISTEN_FDS/
  LISTEN_FDNAMES, mark them close-on-exec, check each is an AF_UNIX socket,
  and sort them by LISTEN_FDNAMES (`control`, `log`), else by SO_TYPE.
- `Notifier` wraps `sdnotify.SystemdNotifier`, which connects once, encodes
  latin-1 and swallows every error: this one reaches `@abstract` and path
  sockets alike, sends UTF-8, reconnects once if the socket went away (a
  manager re-exec), and reports a failing NOTIFY_SOCKET once.
- `watchdog_interval_s` reads WATCHDOG_USEC/WATCHDOG_PID (sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping

import sdnotify  # type: ignore[import-untyped]

SD_LISTEN_FDS_START = 3
EXPECTED = {"control": socket.SOCK_STREAM, "log": socket.SOCK_DGRAM}

log = logging.getLogger("ipcd")


class ActivationError(Exception):
    """The sockets systemd passed are not what ipcd expects."""


def adopt_sockets(
    environ: MutableMapping[str, str] | None = None,
    pid: int | None = None,
    expected: Mapping[str, int] = EXPECTED,
) -> dict[str, socket.socket]:
    """The sockets passed by systemd, by name; {} when not socket-activated."""
    env = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    listen_pid = env.get("LISTEN_PID")
    listen_fds = env.get("LISTEN_FDS")
    names_raw = env.get("LISTEN_FDNAMES")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)  # sd_listen_fds(unset_environment=1): not for our children
    if not listen_pid or not listen_fds:
        return {}
    try:
        if int(listen_pid) != pid:
            return {}  # meant for another process (LISTEN_PID, sd_listen_fds(3))
        n = int(listen_fds)
    except ValueError:
        raise ActivationError(f"LISTEN_PID={listen_pid!r} / LISTEN_FDS={listen_fds!r} are not numbers") from None
    if n <= 0:
        return {}
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n))
    names = names_raw.split(":") if names_raw else None
    if names is not None and len(names) != n:
        raise ActivationError(f"LISTEN_FDNAMES has {len(names)} names for {n} fds: {names_raw!r}")
    socks: list[socket.socket] = []
    try:
        for fd in fds:
            try:
                flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            except OSError as e:  # LISTEN_FDS counts more than were passed
                raise ActivationError(f"fd {fd} is not open ({e.strerror}), but LISTEN_FDS={n}") from None
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
            socks.append(_as_unix_socket(fd))
        return _sort(socks, names, expected)
    except BaseException:
        for s in socks:
            s.detach()  # not ours to close on error: leave the fds as systemd gave them
        raise


def _as_unix_socket(fd: int) -> socket.socket:
    try:
        s = socket.socket(fileno=fd)
    except OSError as e:
        raise ActivationError(f"fd {fd} passed by systemd is not a socket ({e.strerror})") from None
    if s.family != socket.AF_UNIX:
        s.detach()
        raise ActivationError(f"fd {fd} passed by systemd is not an AF_UNIX socket (family {s.family!r})")
    return s


def _sort(socks: list[socket.socket], names: list[str] | None, expected: Mapping[str, int]) -> dict[str, socket.socket]:
    by_type = {kind: name for name, kind in expected.items()}
    out: dict[str, socket.socket] = {}
    for i, s in enumerate(socks):
        kind = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        fd = SD_LISTEN_FDS_START + i
        # A unit without FileDescriptorName= names its fds after itself ("x.socket"):
        # no name ipcd knows, so the socket type decides, as without names.
        if names is not None and names[i] not in ("", "unknown", "stored") and not names[i].endswith(".socket"):
            name = names[i]
            if name not in expected:
                raise ActivationError(
                    f"fd {fd} passed by systemd is named {name!r}; ipcd takes only "
                    f"{', '.join(expected)} (FileDescriptorName=)"
                )
        else:
            name = by_type.get(kind, "")
            if not name:
                raise ActivationError(f"fd {fd} passed by systemd is neither a stream nor a datagram socket")
        if expected[name] != kind:
            want = "stream" if expected[name] == socket.SOCK_STREAM else "datagram"
            raise ActivationError(f"fd {fd} ({name}) passed by systemd is not a {want} socket")
        if name in out:
            raise ActivationError(f"systemd passed two {name} sockets (fds {out[name].fileno()} and {fd})")
        out[name] = s
    return out


def socket_path(s: socket.socket) -> str:
    """The path an adopted AF_UNIX socket is bound to ("" if unnamed)."""
    name = s.getsockname()
    if isinstance(name, bytes):
        return "@" + name[1:].decode(errors="replace") if name[:1] == b"\0" else os.fsdecode(name)
    return name or ""


# -- notify ----------------------------------------------------------------------


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class _Notify(sdnotify.SystemdNotifier):  # type: ignore[misc]
    """sdnotify's notifier, made to connect where it is told, send UTF-8 and raise."""

    def __init__(self, address: str) -> None:
        self.debug = True
        self.address = address
        self.socket: socket.socket | None = None
        self.connect()

    def connect(self) -> None:
        self.close()
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(addr)
        except OSError:
            s.close()
            raise
        self.socket = s

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def notify(self, state: str) -> None:
        if self.socket is None:
            self.connect()
        assert self.socket is not None
        self.socket.sendall(state.encode("utf-8"))


class Notifier:
    """sd_notify(3) for ipcd; a no-op when NOTIFY_SOCKET is not set."""

    def __init__(
        self, environ: MutableMapping[str, str] | None = None, on_error: Callable[[str], None] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or ""
        self.on_error = on_error or (lambda msg: log.warning("%s", msg))
        self.sent = 0
        self.failed = 0
        self._reported = False
        self._n: _Notify | None = None
        # The main loop (STATUS=, WATCHDOG=1) and a control thread (a reload's
        # RELOADING=1 ... READY=1) send at once; one reconnecting must not pull
        # the socket from under the other.
        self._lock = threading.Lock()
        if self.address:
            try:
                self._n = _Notify(self.address)
            except OSError as e:
                self._report(e)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def fds(self) -> list[int]:
        """The descriptor it sends on, if connected (for a child process to close)."""
        n = self._n
        return [n.socket.fileno()] if n is not None and n.socket is not None else []

    def send(self, **fields: object) -> bool:
        """Send KEY=VALUE lines (`ready=1` -> READY=1); True if it went out."""
        if not self.address:
            return False
        text = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        with self._lock:
            return self._send(text)

    def _send(self, text: str) -> bool:
        for attempt in (1, 2):
            try:
                if self._n is None:
                    self._n = _Notify(self.address)
                self._n.notify(text)
                self.sent += 1
                return True
            except OSError as e:
                if self._n is not None:
                    self._n.close()
                self._n = None
                if attempt == 2:
                    self.failed += 1
                    self._report(e)
        return False

    def _report(self, e: OSError) -> None:
        if not self._reported:
            self._reported = True
            self.on_error(f"cannot notify systemd at NOTIFY_SOCKET={self.address}: {e.strerror or e}")

    def ready(self, status: str | None = None) -> bool:
        return self.send(ready=1, **({"status": status} if status else {}))

    def reloading(self) -> bool:
        return self.send(reloading=1, monotonic_usec=monotonic_usec())

    def stopping(self, status: str | None = None) -> bool:
        return self.send(stopping=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(extend_timeout_usec=int(seconds * 1_000_000))

    def failed_exit(self, status: str, errno_: int) -> bool:
        return self.send(status=status, errno=errno_)

    def close(self) -> None:
        with self._lock:
            if self._n is not None:
                self._n.close()
                self._n = None


def _one_line(value: object) -> str:
    return str(value).replace("\n", " ")


def watchdog_interval_s(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Half of WATCHDOG_USEC, when the watchdog is meant for us (sd_watchdog_enabled(3))."""
    env = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    usec = env.get("WATCHDOG_USEC")
    wpid = env.get("WATCHDOG_PID")
    try:
        if not usec or int(usec) <= 0:
            return None
        if wpid and int(wpid) != pid:
            return None
        return int(usec) / 2_000_000
    except ValueError:
        return None
