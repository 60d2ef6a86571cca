"""A blocking client for ipcd's two sockets; `ipcctl` is built on it.

    from ipcd.client import Client

    with Client() as c:                      # the socket ipcctl would use
        print(c.status()["uptime_s"])
        c.kv_set("build/last", {"ok": True}, ttl_s=3600)
        for msg in c.subscribe(["builds"]):  # blocks; one dict per message
            print(msg["channel"], msg["message"])

Errors are exceptions: `Unreachable` (no daemon at the socket; it says which
socket and how to start ipcd), `AccessDenied` (the socket file's mode), and
`RemoteError` for an error the daemon answered, carrying its JSON-RPC
`code`, `message` and `data` (`NotFound`, `Conflict`, `PermissionDenied`,
`LimitReached` and `InvalidParams` are its subclasses).  `LogHandler` sends
`logging` records to the log socket as JSON datagrams.

This module talks to the server side only through the wire format
(`jsonrpc`); it never imports it.
"""

from __future__ import annotations

import errno
import getpass
import itertools
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from . import config, jsonrpc
from .errors import IpcdError

SYSTEM_SOCKET = "/run/ipcd/ipcd.sock"
START_HINT = "start it with `systemctl start ipcd` (or `systemctl --user start ipcd`), or run `ipcd`"


class ClientError(IpcdError):
    """Base of the client's errors."""


class Unreachable(ClientError):
    """No daemon answers at the socket (exit code 3 in ipcctl)."""

    def __init__(self, message: str, path: str | None = None, tried: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.tried = tried


class AccessDenied(ClientError):
    """The socket file does not let us in (exit code 4 in ipcctl)."""


class RemoteError(ClientError):
    """The daemon answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class InvalidParams(RemoteError):
    pass


class PermissionDenied(RemoteError):
    pass


class LimitReached(RemoteError):
    pass


class NotFound(RemoteError):
    pass


class Conflict(RemoteError):
    pass


_REMOTE = {-32602: InvalidParams, -32001: PermissionDenied, -32002: LimitReached, -32003: NotFound, -32004: Conflict}


def remote_error(err: Mapping[str, Any]) -> RemoteError:
    code = err.get("code", -32603)
    cls = _REMOTE.get(code, RemoteError)
    return cls(code, str(err.get("message", "error")), err.get("data"))


# -- finding the daemon (DESIGN.md "Socket resolution in ipcctl") ------------


def user_socket(env: Mapping[str, str], uid: int) -> str:
    """The user instance's control socket: where `ipcd` run by `uid` binds it."""
    user_env = {k: v for k, v in env.items() if k == "XDG_RUNTIME_DIR"}
    return str(config.runtime_dir(None, user_env, uid) / "ipcd.sock")


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
        p = os.path.join(env["IPCD_RUNTIME_DIR"], "ipcd.sock")
        return p, (p,)
    mine = user_socket(env, uid)
    if user:
        return mine, (mine,)
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
    return os.path.join(os.path.dirname(control), "log.sock")


def connect(path: str, timeout_s: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout_s)
    try:
        s.connect(path)
    except BaseException as e:
        s.close()
        raise _explain(e, path) from None
    return s


def _explain(e: BaseException, path: str) -> BaseException:
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


# -- the control client --------------------------------------------------------


class Client:
    """One connection to the control socket; calls are answered in order.

    Not thread-safe: use one `Client` per thread.
    """

    def __init__(self, path: str | None = None, timeout_s: float | None = 10.0, user: bool = False) -> None:
        self.path, self.tried = resolve_socket(path, user)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._framer = jsonrpc.LineFramer(1 << 30)
        self._lines: deque[bytes] = deque()
        self._notes: deque[dict[str, Any]] = deque()  # notifications read while awaiting a reply
        self._ids = itertools.count(1)

    # connection ---------------------------------------------------------

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._sock is None:
            self._sock = connect(self.path, self.timeout_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: Any) -> None:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(jsonrpc.encode(message))
        except OSError as e:
            self.close()
            raise _explain(e, self.path) from None

    def _next_message(self, timeout_s: float | None) -> Any:
        assert self._sock is not None
        while not self._lines:
            self._sock.settimeout(timeout_s)
            try:
                data = self._sock.recv(65536)
            except OSError as e:
                self.close()
                raise _explain(e, self.path) from None
            if not data:
                self.close()
                raise Unreachable(f"ipcd closed the connection on {self.path}", self.path)
            self._lines.extend(self._framer.feed(data))
        return jsonrpc.loads(self._lines.popleft())

    # calls ----------------------------------------------------------------

    def call(self, method: str, params: Any = None) -> Any:
        """Call `method`; its result, or `RemoteError`."""
        req_id = next(self._ids)
        self._send(jsonrpc.request(method, params, req_id))
        return self._await(req_id)

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification: no reply comes."""
        self._send(jsonrpc.request(method, params))

    def _await(self, req_id: int) -> Any:
        while True:
            msg = self._next_message(self.timeout_s)
            if not isinstance(msg, dict):
                continue
            if "method" in msg and "id" not in msg:
                self._notes.append(msg)  # a stream's notification: kept for notifications()
                continue
            if msg.get("id") not in (req_id, None):
                continue
            if "error" in msg:
                raise remote_error(msg["error"])
            if "result" in msg:
                return msg["result"]

    def stream(self, method: str, params: Any = None, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Call a streaming method, then yield its notifications (`method`, `params`)."""
        self.call(method, params)
        return self.notifications(timeout_s)

    def notifications(self, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield notifications as they come; `timeout_s` bounds each wait."""
        while True:
            while self._notes:
                yield self._notes.popleft()
            msg = self._next_message(timeout_s)
            if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                yield msg
            elif isinstance(msg, dict) and msg.get("id") is None and "error" in msg:
                raise remote_error(msg["error"])

    # the methods ------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.call("ping")  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self.call("status")  # type: ignore[no-any-return]

    def methods(self) -> list[dict[str, Any]]:
        return self.call("methods")["methods"]  # type: ignore[no-any-return]

    def shutdown(self) -> dict[str, Any]:
        return self.call("shutdown")  # type: ignore[no-any-return]

    def reload(self) -> dict[str, Any]:
        return self.call("reload")  # type: ignore[no-any-return]

    def clients(self) -> list[dict[str, Any]]:
        return self.call("clients")["clients"]  # type: ignore[no-any-return]


# -- the log socket ------------------------------------------------------------


class LogHandler(logging.Handler):
    """Send `logging` records to ipcd's log socket as JSON datagrams.

    A record's `extra` fields go to the entry's `fields`.  The datagram is
    sent non-blocking: if ipcd is down or its queue is full, the record is
    handed to `handleError` (logging's usual path), never blocking the program.
    """

    _STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self, path: str | None = None, ident: str | None = None, block: bool = False) -> None:
        super().__init__()
        self.path = resolve_log_socket(path)
        self.ident = ident
        self.block = block
        self._sock: socket.socket | None = None

    def _priority(self, levelno: int) -> int:
        for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
            if levelno >= level:
                return self._PRIORITY[level]
        return 7

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
            doc = {
                "message": self.format(record),
                "priority": self._priority(record.levelno),
                "ident": self.ident or record.name,
                "fields": {"logger": record.name, **fields},
            }
            data = json.dumps(doc, default=str, ensure_ascii=False).encode()
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(self.block)
            self._sock.sendto(data, self.path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


def send_datagram(data: bytes, path: str) -> None:
    """One datagram to the log socket (blocking, like glibc's syslog)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(data, path)
        except OSError as e:
            raise _explain(e, path) from None
