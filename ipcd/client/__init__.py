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

Calls (`kv_get`, `kv_update`, `publish`, ...) return the daemon's result;
`call_many` pipelines many calls and returns their results in order.
Streams (`subscribe`, `kv_watch`, `logs(follow=True)`) return an iterator
of the notifications' params; one connection may hold several streams and
still make calls, because notifications read while awaiting a reply are
kept for their stream.  A reader that falls behind gets, in the place of what it
missed, one marker `{"lagged": True, "stream": ..., "missed": N}`.

Errors are exceptions: `Unreachable` (no daemon at the socket; it says which
socket and how to start ipcd), `Untrusted` (an `Unreachable`: a directory
on the socket's path, or the socket, could be someone else's, so nothing
was sent; `trust` has the rule), `AccessDenied` (the socket file's mode), and
`RemoteError` for an error the daemon answered, carrying its JSON-RPC
`code`, `message` and `data`: that is `ipcd.errors.RpcError`, and the error
comes as the daemon's own class for its code (`NotFound`, `Conflict`,
`PermissionDenied`, `LimitReached`, `InvalidParams`, ...).  `LogHandler`
sends `logging` records to the log socket as JSON datagrams.

The modules: `connection` (`Client`, `Stream`, `Subscription`), `resolve`
(finding the sockets, connecting, explaining failures), `handler`
(`LogHandler`, `send_datagram`), `trust` (the path check before any
connect or send) and `errors`.  The client talks to the
server side only through the wire format (`ipcd.wire`); it imports nothing
of it but `ipcd.errors` and `ipcd.config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# What each name comes from: imported when first used, so that a program that needs
# only part of the client (ipcctl status) does not pay for the rest.
_FROM = {
    "AccessDenied": "ipcd.client.errors",
    "Client": "ipcd.client.connection",
    "ClientError": "ipcd.client.errors",
    "Conflict": "ipcd.client.errors",
    "InternalError": "ipcd.client.errors",
    "InvalidParams": "ipcd.client.errors",
    "InvalidRequest": "ipcd.client.errors",
    "IpcdError": "ipcd.client.errors",
    "LimitReached": "ipcd.client.errors",
    "LogHandler": "ipcd.client.handler",
    "MethodNotFound": "ipcd.client.errors",
    "NotFound": "ipcd.client.errors",
    "ParseError": "ipcd.client.errors",
    "PermissionDenied": "ipcd.client.errors",
    "ReloadFailed": "ipcd.client.errors",
    "RemoteError": "ipcd.client.errors",
    "RpcError": "ipcd.client.errors",
    "Stream": "ipcd.client.connection",
    "Subscription": "ipcd.client.connection",
    "Unreachable": "ipcd.client.errors",
    "Untrusted": "ipcd.client.errors",
    "check_socket_path": "ipcd.client.trust",
    "connect": "ipcd.client.resolve",
    "resolve_log_socket": "ipcd.client.resolve",
    "resolve_socket": "ipcd.client.resolve",
    "send_datagram": "ipcd.client.handler",
    "user_socket": "ipcd.client.resolve",
}

if TYPE_CHECKING:
    from ipcd.client.connection import Client, Stream, Subscription
    from ipcd.client.errors import (
        AccessDenied,
        ClientError,
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
        RemoteError,
        RpcError,
        Unreachable,
        Untrusted,
    )
    from ipcd.client.handler import LogHandler, send_datagram
    from ipcd.client.resolve import connect, resolve_log_socket, resolve_socket, user_socket
    from ipcd.client.trust import check_socket_path


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
    "Untrusted",
    "check_socket_path",
    "connect",
    "resolve_log_socket",
    "resolve_socket",
    "send_datagram",
    "user_socket",
]


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'ipcd.client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
