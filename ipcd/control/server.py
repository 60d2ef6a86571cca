"""The control server: accepts connections, counts them, stops them.

`ControlServer` is a `ThreadingUnixStreamServer`: a thread per connection
(kept for the next one when it ends: `threads`), each running
`handler.ControlHandler`, which reads and answers its lines.
The server admits a connection against the connection limits, keeps what
closed connections counted, and owns what all connections share: the
`budget` of queued bytes and the `gate` for requests being handled.  A connection
that opens a stream (logs.follow, subscribe, kv.watch) gets an `Outbox`
(`streams`), so that a slow reader costs only itself.

The server is handed a listening socket: binding the file (or adopting
systemd's) is the daemon's business, as are when to stop and what to unlink.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from typing import Any

from ipcd.control.access import identify
from ipcd.control.app import App
from ipcd.control.budget import QueueBudget, RequestGate
from ipcd.control.connection import ClientConnection
from ipcd.control.handler import ControlHandler, error_line, timeval
from ipcd.control.threads import ConnectionThreads
from ipcd.errors import LimitReached
from ipcd.wire import jsonrpc

log = logging.getLogger("ipcd")


THREADS_CLOSE_S = 5.0  # how long closing waits for the connection threads to end


class ControlServer(socketserver.ThreadingUnixStreamServer):
    # Drain on stop: handlers are told to stop (SHUT_RD), and `stop` waits until their
    # connections are closed; `server_close` then ends the threads (`threads`).
    # DESIGN.md: listen with SOMAXCONN, as systemd's Backlog= default.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, sock: socket.socket, app: App) -> None:
        """Serve `sock`, a listening AF_UNIX stream socket (bound or adopted by the caller)."""
        self.app = app
        self.budget = QueueBudget(lambda: app.config.control.max_queued_bytes)
        self.gate = RequestGate(lambda: app.config.control.max_inflight_request_bytes)
        self._conns: set[ClientConnection] = set()
        self._per_uid: dict[int, int] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.total = 0  # connections accepted since start
        self.refused = 0
        # What closed connections counted: requests, errors, and by method.
        self._closed_counts = [0, 0]
        self._closed_by_method: dict[str, list[int]] = {}
        self.last_loop = time.monotonic()  # the accept loop turned (the watchdog's health check)
        # A thread per connection, as ThreadingMixIn's, but kept for the next one: starting
        # a thread makes the accept loop wait for it (`threads`).
        self.threads = ConnectionThreads(self.process_request_thread, "ipcd-conn")
        super().__init__(sock.getsockname(), ControlHandler, bind_and_activate=False)
        self.socket.close()  # the placeholder socketserver made
        self.socket = sock
        app.add_section("connections", self.connections_status)
        app.add_section("requests", self.requests_status)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.set_inheritable(False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        try:
            peer = identify(sock, self.app.policy)
        except OSError:
            sock.close()
            return
        conn = ClientConnection(sock, peer, self)
        refused = self._admit(conn)
        if refused is not None:
            try:
                sock.setblocking(False)
                sock.send(jsonrpc.to_bytes(error_line(None, refused)))
            except OSError:
                pass
            sock.close()
            return
        # A peer that stops reading gets its writes timed out, not the daemon stuck.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(self.app.config.control.idle_timeout_s))
        self.threads.submit(conn, client_address)  # the request is the connection

    def _admit(self, conn: ClientConnection) -> LimitReached | None:
        """Count `conn` in, or say which limit it hits (DESIGN.md "Limits")."""
        cfg = self.app.config.control
        peer = conn.peer
        admin = peer.role == "admin"
        with self._lock:
            active = len(self._conns)
            # Slots beyond the total only admins may take: no user can lock root out.
            cap = cfg.max_connections + (cfg.admin_reserved_connections if admin else 0)
            if active >= cap:
                self.refused += 1
                return LimitReached(
                    f"too many connections ({active}; max_connections = {cfg.max_connections}"
                    + (f" + admin_reserved_connections = {cfg.admin_reserved_connections})" if admin else ")"),
                    "max_connections",
                    cfg.max_connections,
                )
            mine = self._per_uid.get(peer.uid, 0)
            if not admin and mine >= cfg.max_connections_per_uid:
                self.refused += 1
                return LimitReached(
                    f"too many connections from uid {peer.uid} "
                    f"({mine}; max_connections_per_uid = {cfg.max_connections_per_uid})",
                    "max_connections_per_uid",
                    cfg.max_connections_per_uid,
                )
            # Counted here, in the accepting thread, so that a burst of connects
            # cannot slip past the limit before the handler threads run.
            self._per_uid[peer.uid] = mine + 1
            self._conns.add(conn)
            self.total += 1
        return None

    def shutdown_request(self, request: Any) -> None:
        if not isinstance(request, ClientConnection):
            super().shutdown_request(request)
            return
        request.close()
        with self._lock:
            self._conns.discard(request)
            n = self._per_uid.get(request.peer.uid, 1) - 1
            if n:
                self._per_uid[request.peer.uid] = n
            else:
                self._per_uid.pop(request.peer.uid, None)
            self._closed_counts[0] += request.requests
            self._closed_counts[1] += request.errors
            for name, (calls, errors) in request.by_method.items():
                c = self._closed_by_method.setdefault(name, [0, 0])
                c[0] += calls
                c[1] += errors
            self._idle.notify_all()

    def connections_status(self) -> dict[str, int]:
        cfg = self.app.config.control
        with self._lock:
            active = len(self._conns)
        return {
            "active": active,
            "total": self.total,
            "refused": self.refused,
            "max": cfg.max_connections,
            "queued_bytes": self.budget.held,
            "queue_refused": self.budget.refused,  # replies, notifications, unfinished lines (max_queued_bytes)
            "large_requests_waited": self.gate.waited,  # lines over 4 KiB (max_inflight_request_bytes)
        }

    def requests_status(self) -> dict[str, int]:
        with self._lock:
            total, errors = self._closed_counts
            for conn in self._conns:
                total += conn.requests
                errors += conn.errors
        return {"total": total, "errors": errors}

    def requests_by_method(self) -> dict[str, tuple[int, int]]:
        """(calls, errors) per method name since start."""
        with self._lock:
            out = {name: (c[0], c[1]) for name, c in self._closed_by_method.items()}
            for conn in self._conns:
                for name, (calls, errors) in list(conn.by_method.items()):
                    before = out.get(name, (0, 0))
                    out[name] = (before[0] + calls, before[1] + errors)
        return out

    def server_close(self) -> None:
        """Close the listening socket and end the connection threads (`stop` has ended their connections)."""
        socketserver.UnixStreamServer.server_close(self)
        if not self.threads.close(THREADS_CLOSE_S):
            log.warning("control connection threads still running after %g s", THREADS_CLOSE_S)

    def service_actions(self) -> None:
        self.last_loop = time.monotonic()

    def live(self) -> list[ClientConnection]:
        with self._lock:
            return list(self._conns)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error on a control connection")

    def stop(self, grace_s: float) -> None:
        """Stop accepting, let handlers answer what they read, then close all.

        Call after `shutdown()` returned (serve_forever has stopped).
        """
        for conn in self.live():
            conn.stop()
        if not self._wait_idle(grace_s):
            for conn in self.live():
                conn.abort()
            self._wait_idle(grace_s)
        self.server_close()

    def _wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._conns:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True
