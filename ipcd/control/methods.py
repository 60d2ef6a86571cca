"""The core methods: ping, status, methods, clients, reload, shutdown.

The log and state methods are their packages' (`logs.methods`,
`state.methods`); the daemon joins all of them into one registry.
"""

from __future__ import annotations

import time
from typing import Any

from ipcd.control.app import Call
from ipcd.control.registry import Registry

METHODS = Registry()


@METHODS.method("ping", role="read", doc="Answer at once; the round trip shows ipcd is alive.")
def ping(call: Call) -> dict[str, Any]:
    return {"pong": True, "time": time.time()}


@METHODS.method("status", role="read", doc="What an operator needs: pid, uptime, sockets, counters.")
def status(call: Call) -> dict[str, Any]:
    return call.app.status()


@METHODS.method("methods", role="read", doc="This table: every method, its params, role and doc.")
def methods(call: Call) -> dict[str, Any]:
    return {"methods": [m.describe() for m in call.app.registry]}


@METHODS.method("shutdown", role="admin", doc="Answer, then stop as on SIGTERM.")
def shutdown(call: Call) -> dict[str, Any]:
    call.app.lifecycle.request_stop()
    return {"stopping": True, "pid": call.app.pid}


@METHODS.method(
    "reload",
    role="admin",
    doc="Re-read the config; answers when done (a config that fails keeps the old one).",
)
def reload(call: Call) -> dict[str, Any]:
    return call.app.lifecycle.reload()


@METHODS.method("clients", role="admin", doc="The live control connections and who holds them.")
def clients(call: Call) -> dict[str, Any]:
    return {"clients": [{**conn.describe(), "self": conn is call.conn} for conn in call.conn.server.live()]}
