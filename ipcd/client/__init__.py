"""A blocking client for ipcd's two sockets; `ipcctl` is built on it.

    from ipcd.client import Client

    with Client() as c:                      # the socket ipcctl would use
        print(c.status()["uptime_s"])
        c.kv_set("build/last", {"ok": True}, ttl_s=3600)
        for msg in c.subscribe(["builds"]):  # blocks; one dict per message
            if msg.get("lagged"):            # this reader fell behind
                print("missed", msg["missed"])
                continue
            print(msg["channel"], msg["message"])

Calls (`kv_get`, `kv_update`, `publish`, ...) return the daemon's result.
Streams (`subscribe`, `kv_watch`, `logs(follow=True)`) return an iterator
of the notifications' params; one connection may hold several streams and
still make calls, because notifications read while awaiting a reply are
kept for their stream.  A reader that falls behind gets, in the place of what it
missed, one marker `{"lagged": True, "stream": ..., "missed": N}`.

Errors are exceptions: `Unreachable` (no daemon at the socket; it says which
socket and how to start ipcd), `AccessDenied` (the socket file's mode), and
`RemoteError` for an error the daemon answered, carrying its JSON-RPC
`code`, `message` and `data`: that is `ipcd.errors.RpcError`, and the error
comes as the daemon's own class for its code (`NotFound`, `Conflict`,
`PermissionDenied`, `LimitReached`, `InvalidParams`, ...).  `LogHandler`
sends `logging` records to the log socket as JSON datagrams.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, overload

from ipcd import config
from ipcd.errors import (
    Conflict,
    InternalError,
    InvalidParams,
    InvalidRequest,
    IpcdError,
    LimitReached,
    MethodNotFound,
    NotFound,
    ParseError,
    PermissionDenied,
    ReloadFailed,
    RpcError,
)
from ipcd.wire import jsonrpc

__all__ = [
    "AccessDenied",
    "Client",
    "ClientError",
    "Conflict",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "IpcdError",
    "LimitReached",
    "LogHandler",
    "MethodNotFound",
    "NotFound",
    "ParseError",
    "PermissionDenied",
    "ReloadFailed",
    "RemoteError",
    "RpcError",
    "Stream",
    "Subscription",
    "Unreachable",
    "connect",
    "resolve_log_socket",
    "resolve_socket",
    "send_datagram",
    "user_socket",
]

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


# The daemon's errors come back as the classes it raised (STYLE.md "Errors").
RemoteError = RpcError


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

Note = dict[str, Any]


class Client:
    """One connection to the control socket; calls are answered in order.

    `path=None` finds the socket as ipcctl does (`resolve_socket`).  The
    connection opens on first use (or `connect()`, or `with`).  `timeout_s`
    bounds the wait for each reply; streams wait as long as their own
    `timeout_s` says (forever by default).  Not thread-safe: use one
    `Client` per thread.
    """

    def __init__(self, path: str | None = None, timeout_s: float | None = 10.0, user: bool = False) -> None:
        self.path, self.tried = resolve_socket(path, user)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._framer = jsonrpc.LineFramer(1 << 30)
        self._lines: deque[bytes] = deque()
        self._notes: deque[Note] = deque()  # notifications read while awaiting something else
        self._ids = itertools.count(1)
        self._subscription: Subscription | None = None

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
        """Close the connection; the daemon drops its streams at once."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._notes.clear()
        if self._subscription is not None:
            self._subscription.channels.clear()
            self._subscription = None

    def _send(self, message: Any) -> None:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(jsonrpc.encode(message))
        except OSError as e:
            self.close()
            raise _explain(e, self.path) from None

    def _next_message(self, timeout_s: float | None, waiting_for_reply: bool = True) -> Any:
        if self._sock is None:
            raise Unreachable(f"the connection to {self.path} is closed", self.path)
        while not self._lines:
            self._sock.settimeout(timeout_s)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                if waiting_for_reply:  # the daemon owes us an answer: it is stuck
                    self.close()
                    raise _explain(TimeoutError(), self.path) from None
                raise TimeoutError(f"nothing from {self.path} in {timeout_s:g} s") from None
            except OSError as e:
                self.close()
                raise _explain(e, self.path) from None
            if not data:
                self.close()
                raise Unreachable(f"ipcd closed the connection on {self.path}", self.path)
            self._lines.extend(self._framer.feed(data))
        return jsonrpc.loads(self._lines.popleft())

    def _keep(self, note: Note) -> None:
        """Hold a notification for its stream; drop what no stream of ours wants."""
        method = note.get("method")
        params = note.get("params")
        sub = self._subscription
        if method == "message":
            if sub is None or not isinstance(params, dict) or params.get("channel") not in sub.channels:
                return  # from a channel we have left: nothing after unsubscribe
        elif method == "lagged" and isinstance(params, dict) and params.get("stream") == "subscribe" and sub is None:
            return
        self._notes.append(note)

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
                self._keep(msg)  # a stream's notification: kept for its stream
                continue
            if msg.get("id") not in (req_id, None):
                continue
            if "error" in msg:
                raise RpcError.from_json(msg["error"])
            if "result" in msg:
                return msg["result"]

    def _take(self, accept: Callable[[Note], bool], timeout_s: float | None) -> Note:
        """The next notification that `accept`s; others stay queued for their streams."""
        for i, note in enumerate(self._notes):
            if accept(note):
                del self._notes[i]
                return note
        while True:
            msg = self._next_message(timeout_s, waiting_for_reply=False)
            if not isinstance(msg, dict):
                continue
            if "method" in msg and "id" not in msg:
                if accept(msg):
                    return msg
                self._keep(msg)
            elif msg.get("id") is None and "error" in msg:  # e.g. the daemon is closing us
                raise RpcError.from_json(msg["error"])

    def stream(self, method: str, params: Any = None, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Call a streaming method, then yield all notifications (`method`, `params`)."""
        self.call(method, params)
        return self.notifications(timeout_s)

    def notifications(self, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield every notification as it comes, whole; `timeout_s` bounds each wait."""
        while True:
            yield self._take(lambda note: True, timeout_s)

    # the methods ------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.call("ping")  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        """The daemon's status: pid, uptime, sockets, counters (DESIGN.md "status")."""
        return self.call("status")  # type: ignore[no-any-return]

    def methods(self) -> list[dict[str, Any]]:
        return self.call("methods")["methods"]  # type: ignore[no-any-return]

    def shutdown(self) -> dict[str, Any]:
        return self.call("shutdown")  # type: ignore[no-any-return]

    def reload(self) -> dict[str, Any]:
        return self.call("reload")  # type: ignore[no-any-return]

    def clients(self) -> list[dict[str, Any]]:
        return self.call("clients")["clients"]  # type: ignore[no-any-return]

    # key/value state ----------------------------------------------------------

    def kv_get(self, key: str) -> dict[str, Any]:
        """`{"key", "value", "version", "expires_at", "set_at", "set_by"}`; `NotFound` if missing or expired."""
        return self.call("kv.get", {"key": key})  # type: ignore[no-any-return]

    def kv_set(self, key: str, value: Any, ttl_s: float | None = None, if_version: int | None = None) -> dict[str, Any]:
        """Set `key` to any JSON value: `{"key", "version", "expires_at"}`.

        `ttl_s`: seconds until it expires (none: never; a later set without
        it clears the expiry).  `if_version`: compare-and-set, `Conflict`
        unless the key is at that version now (0: only if absent).
        """
        params: dict[str, Any] = {"key": key, "value": value}
        if ttl_s is not None:
            params["ttl_s"] = ttl_s
        if if_version is not None:
            params["if_version"] = if_version
        return self.call("kv.set", params)  # type: ignore[no-any-return]

    def kv_update(
        self, key: str, fn: Callable[[Any], Any], default: Any = None, ttl_s: float | None = None, max_tries: int = 1000
    ) -> dict[str, Any]:
        """Set `key` to `fn(current value)` (`default` if absent) with no lost update.

        Reads, then writes with `if_version`; on a `Conflict` (another writer
        came between) it reads again and retries, at most `max_tries` times,
        then raises the last `Conflict`.  Returns what `kv_set` returns.
        """
        for attempt in range(1, max_tries + 1):
            try:
                current = self.kv_get(key)
                value, version = current["value"], current["version"]
            except NotFound:
                value, version = default, 0
            try:
                return self.kv_set(key, fn(value), ttl_s, if_version=version)
            except Conflict:
                if attempt >= max_tries:
                    raise
        raise ValueError("max_tries must be at least 1")

    def kv_delete(self, key: str) -> None:
        """Delete `key`; `NotFound` if it is missing."""
        self.call("kv.delete", {"key": key})

    def kv_list(self, prefix: str = "") -> list[str]:
        """The live keys that start with `prefix`, sorted."""
        return self.call("kv.list", {"prefix": prefix})["keys"]  # type: ignore[no-any-return]

    def kv_watch(self, prefix: str = "", timeout_s: float | None = None) -> Stream:
        """Changes under `prefix` from now on: `{"key", "op", "value", "version"}`
        with `op` one of "set", "delete", "expire" (`value` is None but for set)."""
        result = self.call("kv.watch", {"prefix": prefix})
        return Stream(
            self, "kv.watch", "kv.change", result, timeout_s, lambda p: str(p.get("key", "")).startswith(prefix)
        )

    # channels ------------------------------------------------------------------

    def publish(self, channel: str, message: Any) -> int:
        """Send `message` (any JSON) to `channel`; how many subscribers it reached."""
        return self.call("publish", {"channel": channel, "message": message})["delivered"]  # type: ignore[no-any-return]

    def subscribe(self, channels: str | Iterable[str], timeout_s: float | None = None) -> Subscription:
        """Listen to `channels` (a name or several); iterate for the messages.

        Each message is `{"channel", "message", "published_at", "uid", "pid"}`
        (the publisher's uid and pid).  A connection has one subscription:
        subscribing again adds channels to it and returns the same iterator.
        """
        names = [channels] if isinstance(channels, str) else list(channels)
        result = self.call("subscribe", {"channels": names})
        sub = self._subscription
        if sub is None:
            sub = self._subscription = Subscription(self, result, timeout_s)
        sub.channels.update(result["channels"])
        return sub

    def unsubscribe(self, channels: str | Iterable[str] | None = None) -> list[str]:
        """Stop listening to `channels` (all if None); the channels left.

        Nothing from them is yielded after this returns, even if it was
        already on its way; with no channel left, the iteration ends.
        """
        names = None if channels is None else [channels] if isinstance(channels, str) else list(channels)
        left: list[str] = self.call("unsubscribe", {"channels": names} if names is not None else {})["channels"]
        sub = self._subscription
        if sub is not None:
            sub.channels.difference_update(left)
            if not sub.channels:
                self._subscription = None
            kept = list(self._notes)
            self._notes.clear()
            for note in kept:
                self._keep(note)
        return left

    # logs ----------------------------------------------------------------------

    @overload
    def logs(self, follow: Literal[False] = False, **filters: Any) -> list[dict[str, Any]]: ...

    @overload
    def logs(self, follow: Literal[True], **filters: Any) -> Stream: ...

    def logs(self, follow: bool = False, **filters: Any) -> list[dict[str, Any]] | Stream:
        """Log entries (DESIGN.md "Log socket" has their fields).

        `filters`: since, until, priority, ident, pid, uid, grep; without
        `follow`, also limit (default 100) and after_id: a list in id order.
        With `follow=True` (and `backlog`: entries to send first), an
        iterator of entries as they are stored; `timeout_s` bounds each wait.
        """
        if not follow:
            return self.call("logs.query", filters)["entries"]  # type: ignore[no-any-return]
        timeout_s = filters.pop("timeout_s", None)
        result = self.call("logs.follow", filters)
        return Stream(self, "logs.follow", "logs.entry", result, timeout_s)


class Stream(Iterator[dict[str, Any]]):
    """The notifications of one streaming call, as an iterator of their params.

    `result` is what the call answered.  A `lagged` notice for this stream
    comes as `{"lagged": True, "stream": name, "missed": N}` in the place of
    the N notifications the daemon could not queue for this slow reader.
    `timeout_s` bounds each wait (None: forever); past it, `next()` raises
    `TimeoutError` and the stream stays usable.  If the daemon closes the
    connection (it stopped), `next()` raises `Unreachable`.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        method: str,
        result: Any,
        timeout_s: float | None,
        wants: Callable[[dict[str, Any]], bool] = lambda params: True,
    ) -> None:
        self.client = client
        self.name = name
        self.method = method
        self.result = result
        self.timeout_s = timeout_s
        self._wants = wants

    def _accept(self, note: Note) -> bool:
        params = note.get("params")
        if not isinstance(params, dict):
            return False
        if note.get("method") == "lagged":
            return params.get("stream") == self.name
        return note.get("method") == self.method and self._wants(params)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> dict[str, Any]:
        note = self.client._take(self._accept, self.timeout_s)
        if note["method"] == "lagged":
            return {"lagged": True, **note["params"]}
        return note["params"]  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the client's connection (and so every stream on it)."""
        self.client.close()


class Subscription(Stream):
    """The connection's channel subscription; `channels` is what it listens to."""

    def __init__(self, client: Client, result: Any, timeout_s: float | None) -> None:
        self.channels: set[str] = set()
        super().__init__(client, "subscribe", "message", result, timeout_s, lambda p: p.get("channel") in self.channels)

    def __next__(self) -> dict[str, Any]:
        if not self.channels:
            raise StopIteration
        return super().__next__()

    def unsubscribe(self, channels: str | Iterable[str] | None = None) -> list[str]:
        """As `Client.unsubscribe`."""
        return self.client.unsubscribe(channels)


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
                "pid": record.process,
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
