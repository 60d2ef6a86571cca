"""The method registry: name -> handler, params, role, doc.

Every control method is declared here or by a subsystem module through
`REGISTRY.method(...)`: its params (validated before the handler runs; a bad
one is -32602 naming it), the role it needs (checked before the params) and
a one-line doc, which `methods` returns.  Handlers take a `Call` (the peer,
the `App`, the connection) and keyword params, and return the result or
raise an `RpcError`.  Turning results and errors into replies is `server`'s
job; what each subsystem does is its own module's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ipcd import __version__
from ipcd.config import Config
from ipcd.control.access import ROLES, Peer, Policy, require
from ipcd.errors import InternalError, InvalidParams, MethodNotFound
from ipcd.wire.jsonrpc import Request

Handler = Callable[..., Any]


# -- params ------------------------------------------------------------------

_KINDS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "strings": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "any": lambda v: True,
}
_KIND_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "strings": "a list of strings",
}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # a key of _KINDS, or "|"-joined keys ("integer|string")
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    check: Callable[[Any], Any] | None = None  # normalise, or raise ValueError
    doc: str = ""

    def validate(self, value: Any) -> Any:
        kinds = self.kind.split("|")
        if not any(_KINDS[k](value) for k in kinds):
            want = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
            raise InvalidParams(f"invalid param {self.name!r}: must be {want}", self.name)
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            # Integers go to SQLite, which stores 64 bits (and sqlite3 raises past that).
            raise InvalidParams(f"invalid param {self.name!r}: out of the 64-bit range", self.name)
        if self.min is not None and _is_num(value) and value < self.min:
            raise InvalidParams(f"invalid param {self.name!r}: must be >= {self.min:g}", self.name)
        if self.max is not None and _is_num(value) and value > self.max:
            raise InvalidParams(f"invalid param {self.name!r}: must be <= {self.max:g}", self.name)
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as e:
                raise InvalidParams(f"invalid param {self.name!r}: {e}", self.name) from None
        return value

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "required": self.required}
        if not self.required and self.default is not None:
            out["default"] = self.default
        if self.doc:
            out["doc"] = self.doc
        return out


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    params: tuple[Param, ...]
    role: str
    doc: str
    stream: bool = False

    def bind(self, req: Request) -> dict[str, Any]:
        """The request's params as validated keyword arguments."""
        given = _named(self, req)
        out: dict[str, Any] = {}
        for p in self.params:
            # null is a value for an "any" param (kv.set of null); for the others it means "not given".
            if p.name in given and (given[p.name] is not None or p.kind == "any"):
                out[p.name] = p.validate(given[p.name])
            elif p.required:
                raise InvalidParams(f"missing param {p.name!r}", p.name)
            else:
                out[p.name] = p.default
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "params": [p.describe() for p in self.params],
            "doc": self.doc,
            "stream": self.stream,
        }


def _named(m: Method, req: Request) -> dict[str, Any]:
    params = req.params
    if params is None:
        return {}
    if isinstance(params, dict):
        names = {p.name for p in m.params}
        for key in params:
            if key not in names:
                raise InvalidParams(f"unknown param {key!r} for {m.name}", key)
        return params
    args = list(params)
    decl = m.params
    if req.plain and decl and decl[-1].kind == "strings" and len(args) >= len(decl):
        # A plain `subscribe a b c`: the last list param takes the rest.
        n = len(decl) - 1
        args = args[:n] + [[str(a) for a in req.raw_args[n:]]]
    if len(args) > len(decl):
        raise InvalidParams(f"{m.name} takes at most {len(decl)} params, got {len(args)}", None)
    out = dict(zip((p.name for p in decl), args, strict=False))
    if req.plain:
        for i, p in enumerate(decl[: len(args)]):
            # Plain args are JSON when they parse; give string params the text as typed.
            if "string" in p.kind.split("|") and not isinstance(out[p.name], str):
                out[p.name] = req.raw_args[i]
            elif p.kind == "strings" and isinstance(out[p.name], str):
                out[p.name] = [out[p.name]]
    return out


class Registry:
    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def method(
        self,
        name: str,
        *,
        role: str,
        doc: str,
        params: tuple[Param, ...] = (),
        stream: bool = False,
    ) -> Callable[[Handler], Handler]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")

        def register(fn: Handler) -> Handler:
            if name in self._methods:
                raise ValueError(f"method {name!r} registered twice")
            self._methods[name] = Method(name, fn, params, role, doc, stream)
            return fn

        return register

    def get(self, name: str) -> Method:
        try:
            return self._methods[name]
        except KeyError:
            raise MethodNotFound(f"method not found: {name!r} (see `methods`)", {"method": name}) from None

    def __iter__(self) -> Iterator[Method]:
        return iter(sorted(self._methods.values(), key=lambda m: m.name))


REGISTRY = Registry()


# -- what handlers see -------------------------------------------------------


class Counters:
    """Named counters, safe to bump from any thread."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class Connection(Protocol):
    """What a handler may do with the connection it runs on (see `server`)."""

    peer: Peer
    connected_at: float
    requests: int

    def open_stream(self, name: str) -> Any: ...

    def on_close(self, fn: Callable[[], None]) -> None: ...


@dataclass
class App:
    """The running daemon as the methods see it.  Subsystems that exist add
    their status section to `sections`; absent ones are simply not there."""

    config: Config
    policy: Policy
    pid: int = field(default_factory=os.getpid)
    started_mono: float = field(default_factory=time.monotonic)
    activation: str = "self"
    sockets: dict[str, str] = field(default_factory=dict)
    connections: Counters = field(default_factory=lambda: Counters("active", "total", "refused"))
    requests: Counters = field(default_factory=lambda: Counters("total", "errors"))
    sections: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)  # "store", "kv", "channels", ...
    live: Callable[[], list[Connection]] = lambda: []
    request_shutdown: Callable[[], None] = lambda: None
    reload: Callable[[], dict[str, Any]] | None = None

    def status(self) -> dict[str, Any]:
        conns = self.connections.snapshot()
        out: dict[str, Any] = {
            "version": __version__,
            "pid": self.pid,
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "activation": self.activation,
            "sockets": dict(self.sockets),
            "connections": {
                "active": conns["active"],
                "total": conns["total"],
                "refused": conns["refused"],
                "max": self.config.control.max_connections,
            },
            "requests": self.requests.snapshot(),
        }
        for name, section in self.sections.items():
            out[name] = section()
        return out


@dataclass
class Call:
    app: App
    peer: Peer
    conn: Connection
    method: Method


# -- the core methods --------------------------------------------------------


@REGISTRY.method("ping", role="read", doc="Answer at once; the round trip shows ipcd is alive.")
def ping(call: Call) -> dict[str, Any]:
    return {"pong": True, "time": time.time()}


@REGISTRY.method("status", role="read", doc="What an operator needs: pid, uptime, sockets, counters.")
def status(call: Call) -> dict[str, Any]:
    return call.app.status()


@REGISTRY.method("methods", role="read", doc="This table: every method, its params, role and doc.")
def methods(call: Call) -> dict[str, Any]:
    return {"methods": [m.describe() for m in REGISTRY]}


@REGISTRY.method("shutdown", role="admin", doc="Answer, then stop as on SIGTERM.")
def shutdown(call: Call) -> dict[str, Any]:
    call.app.request_shutdown()
    return {"stopping": True, "pid": call.app.pid}


@REGISTRY.method(
    "reload",
    role="admin",
    doc="Re-read the config; answers when done (a config that fails keeps the old one).",
)
def reload(call: Call) -> dict[str, Any]:
    if call.app.reload is None:
        raise InternalError("this ipcd cannot reload (no config source)")
    return call.app.reload()


@REGISTRY.method("clients", role="admin", doc="The live control connections and who holds them.")
def clients(call: Call) -> dict[str, Any]:
    out = []
    for conn in call.app.live():
        p = conn.peer
        out.append(
            {
                "pid": p.pid,
                "uid": p.uid,
                "gid": p.gid,
                "command": p.comm,
                "role": p.role,
                "connected_at": conn.connected_at,
                "requests": conn.requests,
                "self": conn is call.conn,
            }
        )
    return {"clients": out}


def check_role(peer: Peer, m: Method) -> None:
    require(peer.role, m.role, m.name)
