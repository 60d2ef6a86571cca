"""`Client`: one connection to the control socket, its calls and its streams.

A call sends one JSON-RPC request and reads until its reply; notifications
that arrive meanwhile are kept for the stream they belong to (`Stream`,
`Subscription`), so one connection may hold several streams and still make
calls.  A daemon's error reply is raised as the daemon's own error class
(`RpcError.from_json`); a broken connection as `Unreachable`.
"""

from __future__ import annotations

import itertools
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, overload

from ipcd.client.errors import Conflict, NotFound, RpcError, Unreachable
from ipcd.client.resolve import connect, explain, resolve_socket
from ipcd.wire import jsonrpc

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
        self._send_raw(jsonrpc.encode(message))

    def _send_raw(self, data: bytes) -> None:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as e:
            self.close()
            raise explain(e, self.path) from None

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
                    raise explain(TimeoutError(), self.path) from None
                raise TimeoutError(f"nothing from {self.path} in {timeout_s:g} s") from None
            except OSError as e:
                self.close()
                raise explain(e, self.path) from None
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

    def call_many(self, calls: Iterable[tuple[str, Any]], errors: bool = False, window: int = 64) -> list[Any]:
        """Pipelined calls: send up to `window` requests before reading their replies.

        `calls` is `(method, params)` pairs; the results come back in that
        order.  Every reply is read before anything is raised, so the
        connection stays usable.  By default the first error, in call order,
        is raised; with `errors=True` each failed call's `RemoteError` takes
        the place of its result instead.  The window keeps both sides from
        blocking on full socket buffers; one round trip per `window` calls.
        """
        results: list[Any] = []
        pending = iter(calls)
        while chunk := list(itertools.islice(pending, max(1, window))):
            ids = [next(self._ids) for _ in chunk]
            self._send_raw(
                b"".join(jsonrpc.encode(jsonrpc.request(m, p, i)) for (m, p), i in zip(chunk, ids, strict=True))
            )
            for req_id in ids:
                try:
                    results.append(self._await(req_id))
                except RpcError as e:
                    results.append(e)
        if not errors:
            first = next((r for r in results if isinstance(r, RpcError)), None)
            if first is not None:
                raise first
        return results

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
        """Stop listening to `channels` (all if None); the channels unsubscribed from.

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

        `filters` are the daemon's params: since, until, priority (a level or
        "FROM..TO"), ident, unit, pid, uid, grep; without `follow`, also
        limit (default 100), after_id and before_id: a list in id order.
        With `follow=True` (and `backlog`: entries to send first, or
        `after_id`: every matching entry after it first), an iterator of
        entries as they are stored; `timeout_s` bounds each wait.
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
