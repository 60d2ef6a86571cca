"""The client's errors: its own, and the daemon's re-exported.

`Unreachable` (no daemon answers at the socket) and `AccessDenied` (the
socket file's mode) are the client's own, `ClientError`s.  An error the
daemon answered comes back as the class the daemon raised, from
`ipcd.errors` (`RpcError.from_json`): `RemoteError` is `RpcError`, and
`NotFound`, `Conflict`, ... are the server's classes, never copies of their
codes (STYLE.md "Errors").  All of them are `IpcdError`s.
"""

from __future__ import annotations

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

__all__ = [
    "AccessDenied",
    "ClientError",
    "Conflict",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "IpcdError",
    "LimitReached",
    "MethodNotFound",
    "NotFound",
    "ParseError",
    "PermissionDenied",
    "ReloadFailed",
    "RemoteError",
    "RpcError",
    "Unreachable",
    "Untrusted",
]

RemoteError = RpcError


class ClientError(IpcdError):
    """Base of the client's errors."""


class Unreachable(ClientError):
    """No daemon answers at the socket (exit code 3 in ipcctl)."""

    def __init__(self, message: str, path: str | None = None, tried: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.tried = tried


class Untrusted(Unreachable):
    """A directory on the socket's path, or the socket, is not safe to use (exit code 3 in ipcctl).

    Someone other than you, root or ipcd could have put a fake daemon there:
    nothing was sent.  `path` is the directory or file that failed.
    """


class AccessDenied(ClientError):
    """The socket file does not let us in (exit code 4 in ipcctl)."""
