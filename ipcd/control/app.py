"""What a method handler sees: the `App` (the running daemon) and its `Call`.

The daemon builds one `App` and hands it its services once, by type
(`app.provide(kv)`); a handler asks for what it needs by type
(`call.app.get(KvStore)`), so the wiring is typed and a missing service is a
clear error, not a KeyError.  Status sections are added by name, since the
name is what `status` shows.  Starting, stopping and reloading are the
daemon's (`Lifecycle`); the connection a call runs on is `server`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ipcd import __version__
from ipcd.config import Config
from ipcd.control.access import Peer, Policy
from ipcd.control.registry import Method, Registry
from ipcd.errors import InternalError, RpcError

if TYPE_CHECKING:
    from ipcd.control.streams import Stream

T = TypeVar("T")


class Server(Protocol):
    def live(self) -> Sequence[Connection]: ...


class Connection(Protocol):
    """What a handler may do with the connection it runs on (`server.ClientConnection`)."""

    peer: Peer
    connected_at: float
    requests: int

    @property
    def server(self) -> Server: ...

    def open_stream(self, name: str) -> Stream: ...

    def weigh(self, stream: Stream, weight: int) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def on_close(self, fn: Callable[[], None]) -> None: ...

    def attach(self, kind: type[T], make: Callable[[], T]) -> T: ...

    def attachment(self, kind: type[T]) -> T | None: ...

    def detach(self, kind: type) -> None: ...


class Lifecycle(Protocol):
    """What the daemon lets methods ask of it."""

    def request_stop(self) -> None: ...

    def reload(self) -> dict[str, Any]: ...


class NoLifecycle:
    """For a control server with no daemon around it (tests, tools)."""

    def request_stop(self) -> None:
        pass

    def reload(self) -> dict[str, Any]:
        raise InternalError("this ipcd cannot reload (no config source)")


class App:
    """The running daemon as the methods see it.

    Subsystems that exist add their status section; absent ones are simply
    not there (DESIGN.md: a section is absent, never faked).
    """

    def __init__(
        self,
        config: Config,
        policy: Policy,
        registry: Registry,
        lifecycle: Lifecycle | None = None,
        activation: str = "self",
    ) -> None:
        self.config = config
        self.policy = policy
        self.registry = registry
        self.lifecycle: Lifecycle = lifecycle or NoLifecycle()
        self.activation = activation
        self.pid = os.getpid()
        self.started_mono = time.monotonic()
        self.sockets: dict[str, str] = {}
        self.config_path: str | None = None  # the file the config comes from, if any
        self._sections: dict[str, Callable[[], Any]] = {}
        self._services: dict[type, object] = {}

    def provide(self, service: object, kind: type | None = None) -> None:
        """Make `service` available to handlers as `get(kind)` (its own class by default)."""
        self._services[kind or type(service)] = service

    def get(self, kind: type[T]) -> T:
        try:
            return cast(T, self._services[kind])
        except KeyError:
            raise InternalError(f"{kind.__name__} is not running in this ipcd") from None

    def add_section(self, name: str, section: Callable[[], Any]) -> None:
        self._sections[name] = section

    def status_of(self, name: str) -> dict[str, Any]:
        """One section of `status`, or {} if that part is not running."""
        section = self._sections.get(name)
        value = section() if section is not None else {}
        return value if isinstance(value, dict) else {}

    def status(self) -> dict[str, Any]:
        """`status`: who and where, then each section (`connections` and `requests` are the server's)."""
        out: dict[str, Any] = {
            "version": __version__,
            "pid": self.pid,
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "activation": self.activation,
            "sockets": dict(self.sockets),
            "config": self.config_path,
            "config_exists": bool(self.config_path and os.path.exists(self.config_path)),
        }
        for name, section in self._sections.items():
            out[name] = section()
        return out


@dataclass(slots=True)
class Call:
    """One method call: who asked, on which connection, through which method."""

    app: App
    peer: Peer
    conn: Connection
    method: Method


class Deferred:
    """A result whose reply waits for `wait()` (a commit): what a write method returns.

    The connection's handler does not wait at once: it handles the rest of
    what it has read first and waits just before writing the replies, so a
    pipelined client's writes (or a batch's) join one commit instead of one
    each.  If `wait` raises an `RpcError`, that is the reply instead of
    `value`.  Replies still go out in request order.
    """

    __slots__ = ("wait", "value", "hand_off")

    def __init__(
        self,
        wait: Callable[[], None],
        value: Any,
        hand_off: Callable[[Callable[[RpcError | None], None]], bool] | None = None,
    ) -> None:
        self.wait = wait
        self.value = value
        self.hand_off = hand_off
