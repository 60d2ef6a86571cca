"""Every error ipcd raises on purpose.

`IpcdError` is the root.  `RpcError` and its subclasses each carry the
JSON-RPC 2.0 error code they map to (DESIGN.md "Control protocol"), so that
`server` can turn any of them into a reply without a lookup table, and the
client turns a reply back into the same class (`RpcError.from_json`): the
client's error classes are these, never a second copy of the codes.  Errors
that never cross the wire (a bad config file, a failed start) have their own
classes and carry what the operator needs to fix them.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any


class IpcdError(Exception):
    """Base class of every error ipcd raises on purpose."""


class RpcError(IpcdError):
    """An error that becomes a JSON-RPC error object, or was read back from one.

    `str()` is "message (code)": the form a program that caught it shows.
    """

    # The class's code; an error rebuilt from a code no class has keeps that code (`from_json`).
    code: int = -32603

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data: Any = data  # from a reply: any JSON value (JSON-RPC 2.0 §5.1)

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> RpcError:
        """The error a JSON-RPC error object stands for, as a client reads it from a reply.

        Its class is the one `RPC_ERRORS` has for the code, else `RpcError`
        itself keeping the code; `message` and `data` are kept as they came,
        and what a subclass's constructor puts in `data` is read back from it
        (`InvalidParams.param`, `PermissionDenied.required_role`, `LimitReached.limit`).
        """
        code = obj.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = InternalError.code
        cls = RPC_ERRORS.get(code, RpcError)
        err = cls.__new__(cls)  # not cls(...): subclasses take arguments of their own
        RpcError.__init__(err, str(obj.get("message", "error")), obj.get("data"))
        err.code = code
        return err


def _datum(data: Any, key: str) -> str | None:
    """`data[key]` if it is a string: from a reply, `data` may be any JSON value."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


class ParseError(RpcError):
    code = -32700


class InvalidRequest(RpcError):
    code = -32600


class MethodNotFound(RpcError):
    code = -32601


class InvalidParams(RpcError):
    code = -32602

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, {"param": param} if param is not None else None)

    @property
    def param(self) -> str | None:
        """The param at fault, if one is."""
        return _datum(self.data, "param")


class InternalError(RpcError):
    code = -32603


class PermissionDenied(RpcError):
    code = -32001

    def __init__(self, message: str, required_role: str) -> None:
        super().__init__(message, {"required_role": required_role})

    @property
    def required_role(self) -> str | None:
        return _datum(self.data, "required_role")


class LimitReached(RpcError):
    code = -32002

    def __init__(self, message: str, limit: str, value: Any = None) -> None:
        data: dict[str, Any] = {"limit": limit}
        if value is not None:
            data["value"] = value
        super().__init__(message, data)

    @property
    def limit(self) -> str | None:
        """The config key that set the limit."""
        return _datum(self.data, "limit")


class NotFound(RpcError):
    code = -32003


class Conflict(RpcError):
    code = -32004


class ReloadFailed(RpcError):
    """The config could not be applied; the old one stays (the `reload` method, SIGHUP)."""

    code = -32005


# Codes by number, for clients that turn a reply back into an exception.
RPC_ERRORS: dict[int, type[RpcError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        PermissionDenied,
        LimitReached,
        NotFound,
        Conflict,
        ReloadFailed,
    )
}


class ConfigError(IpcdError):
    """A config file or option that cannot be used; names file, line and key."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = path
            if line is not None:
                where += f":{line}"
            where += ": "
        if key is not None:
            message = f"{key}: {message}"
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.key = key


class StartupError(IpcdError):
    """ipcd cannot start: a path is unusable, a store cannot be opened, ...

    `errno` is what systemd shows for the failed start (sd_notify ERRNO=).
    """

    def __init__(self, message: str, errno_: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = errno_


class AlreadyRunning(StartupError):
    """Another ipcd holds the runtime dir or answers on the socket."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message, errno.EADDRINUSE)
        self.pid = pid
