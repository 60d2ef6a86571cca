"""Method registries: name -> handler, params, role, doc.

Each package that serves methods declares them on a `Registry` of its own
(`control.methods.METHODS`, `logs.methods.METHODS`, ...) with
`@METHODS.method(...)`: its params (validated before the handler runs; a bad
one is -32602 naming it), the role it needs (checked before the params) and
a one-line doc, which `methods` returns.  The daemon joins them into the
one registry its server dispatches through (`Registry.join`).  Handlers take
a `Call` (`control.app`) and keyword params, and return the result or raise
an `RpcError`.  Turning results and errors into replies is `server`'s job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ipcd.control.access import RANK, ROLES
from ipcd.errors import InvalidParams, MethodNotFound
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
_ABSENT = object()  # a param not given (None is a value: null)
_PLAIN: dict[str, frozenset[type]] = {  # by kind: types with nothing to test (an int has its 64-bit range)
    "string": frozenset({str}),
    "boolean": frozenset({bool}),
    "any": frozenset({dict, list, str, bool, float, type(None)}),
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

    @functools.cached_property
    def _tests(self) -> tuple[Callable[[Any], bool], ...]:
        return tuple(_KINDS[k] for k in self.kind.split("|"))

    @functools.cached_property
    def _plain(self) -> frozenset[type]:
        """The types that, for this param, need nothing checked but `check` (a string param's str)."""
        if self.min is not None or self.max is not None:
            return frozenset()
        return _PLAIN.get(self.kind, frozenset())

    def validate(self, value: Any) -> Any:
        if type(value) not in self._plain:  # the common case (a string for a string param) skips the tests
            self._check_kind(value)
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as e:
                raise InvalidParams(f"invalid param {self.name!r}: {e}", self.name) from None
        return value

    def _check_kind(self, value: Any) -> None:
        for test in self._tests:
            if test(value):
                break
        else:
            want = " or ".join(_KIND_NAMES.get(k, k) for k in self.kind.split("|"))
            raise InvalidParams(f"invalid param {self.name!r}: must be {want}", self.name)
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            # Integers go to SQLite, which stores 64 bits (and sqlite3 raises past that).
            raise InvalidParams(f"invalid param {self.name!r}: out of the 64-bit range", self.name)
        if self.min is not None and _is_num(value) and value < self.min:
            raise InvalidParams(f"invalid param {self.name!r}: must be >= {self.min:g}", self.name)
        if self.max is not None and _is_num(value) and value > self.max:
            raise InvalidParams(f"invalid param {self.name!r}: must be <= {self.max:g}", self.name)

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
    defers: bool = False  # returns an `app.Deferred`: its reply waits for a commit

    @functools.cached_property
    def rank(self) -> int:
        return RANK[self.role]

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params)

    @functools.cached_property
    def bare(self) -> bool:
        """No params declared: a call without params has nothing to bind."""
        return not self.params

    def bind(self, req: Request) -> dict[str, Any]:
        """The request's params as validated keyword arguments."""
        if req.params is None and not self._required:
            return dict(self._defaults)  # a call with no params (ping, status): nothing to check
        given = _named(self, req)
        out: dict[str, Any] = {}
        for p in self.params:
            value = given.get(p.name, _ABSENT)
            # null is a value for an "any" param (kv.set of null); for the others it means "not given".
            if value is not _ABSENT and (value is not None or p.kind == "any"):
                out[p.name] = p.validate(value)
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

    @functools.cached_property
    def _required(self) -> bool:
        return any(p.required for p in self.params)

    @functools.cached_property
    def _defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


def _named(m: Method, req: Request) -> dict[str, Any]:
    params = req.params
    if params is None:
        return {}
    if isinstance(params, dict):
        names = m.names
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
        self.methods: Mapping[str, Method] = MappingProxyType(self._methods)  # name -> Method, read-only

    @classmethod
    def join(cls, parts: Iterable[Registry]) -> Registry:
        """One registry holding every method of `parts`; a name twice is an error."""
        out = cls()
        for part in parts:
            for m in part:
                if m.name in out._methods:
                    raise ValueError(f"method {m.name!r} registered twice")
                out._methods[m.name] = m
        return out

    def method(
        self,
        name: str,
        *,
        role: str,
        doc: str,
        params: tuple[Param, ...] = (),
        stream: bool = False,
        defers: bool = False,
    ) -> Callable[[Handler], Handler]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")

        def register(fn: Handler) -> Handler:
            if name in self._methods:
                raise ValueError(f"method {name!r} registered twice")
            self._methods[name] = Method(name, fn, params, role, doc, stream, defers)
            return fn

        return register

    def find(self, name: str) -> Method | None:
        return self._methods.get(name)

    def get(self, name: str) -> Method:
        try:
            return self._methods[name]
        except KeyError:
            raise MethodNotFound(f"method not found: {name!r} (see `methods`)", {"method": name}) from None

    def __iter__(self) -> Iterator[Method]:
        return iter(sorted(self._methods.values(), key=lambda m: m.name))
