"""The control server: the only control code that touches sockets.

`ControlServer` is a `ThreadingUnixStreamServer`: a thread per connection,
each running `ControlHandler`, which frames lines (`jsonrpc.LineFramer`),
dispatches them through the app's method registry and writes replies in
order.  A connection that opens a stream (logs.follow, subscribe, kv.watch)
gets an `Outbox` (`streams`), so that a slow reader costs only itself.

The server is handed a listening socket: binding the file (or adopting
systemd's) is the daemon's business, as are when to stop and what to unlink.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading
import time
from typing import Any

from ipcd.control.access import identify, require
from ipcd.control.app import App, Call
from ipcd.control.connection import ClientConnection
from ipcd.control.registry import Method
from ipcd.errors import InternalError, LimitReached, MethodNotFound, RpcError
from ipcd.wire import jsonrpc

log = logging.getLogger("ipcd")


class ControlHandler(socketserver.BaseRequestHandler):
    """Reads lines, answers each in order; exits on EOF, idle timeout or stop.

    The hot path: one blocking `recv` per read (the idle timeout is the
    socket's SO_RCVTIMEO, not a poll per read), every complete line answered,
    the replies of one read written with one `send`.
    """

    request: ClientConnection
    server: ControlServer

    def handle(self) -> None:
        conn = self.request
        cfg = self.server.app.config.control
        framer = jsonrpc.LineFramer(cfg.max_request_bytes)
        idle_s = cfg.idle_timeout_s
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(idle_s))
        recv = conn.sock.recv
        partial_since = 0.0  # when the unfinished line held back began
        while True:
            try:
                data = recv(65536)
            except BlockingIOError:  # SO_RCVTIMEO: nothing for idle_s
                if conn.streams and not framer.pending:
                    continue  # a follower may be silent for as long as it likes
                self._send_error(_idle_error(idle_s, bool(framer.pending)))
                return
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            conn.last_active = now
            try:
                lines = framer.feed(data)
            except jsonrpc.LineTooLong as e:  # answer what came before it, then the error, then close
                self._answer(e.lines)
                self._send_error(e)
                return
            if not framer.pending:
                partial_since = 0.0
            elif lines or not partial_since:
                partial_since = now
            elif now - partial_since > idle_s:  # a line trickled in a byte at a time is cut all the same
                self._answer(lines)
                self._send_error(_idle_error(idle_s, True))
                return
            if lines and not self._answer(lines):
                return

    def _answer(self, lines: list[bytes]) -> bool:
        """Answer `lines` in order, in one write; False if the peer is gone."""
        conn = self.request
        outbox = conn.outbox
        if outbox is not None:
            outbox.hold()  # a stream's notifications wait until these replies are out
        try:
            replies = [r for r in map(self._handle_line, lines) if r is not None]
            if replies:
                conn.send(replies[0] if len(replies) == 1 else b"".join(replies))
            return True
        except OSError:
            return False
        finally:
            if outbox is not None:
                outbox.release()
            elif conn.outbox is not None:  # one of these calls opened the first stream
                conn.outbox.release()

    def _handle_line(self, line: bytes) -> bytes | None:
        parsed = jsonrpc.parse_line(line)
        if parsed is None:
            return None
        cfg = self.server.app.config.control
        if isinstance(parsed, list):
            if len(parsed) > cfg.max_batch:
                self.request.requests += 1
                self.request.errors += 1
                msg = f"batch of {len(parsed)} calls; max_batch = {cfg.max_batch}"
                err = LimitReached(msg, "max_batch", cfg.max_batch)
                return jsonrpc.to_bytes(_error_line(None, err))
            replies = [r for r in map(self._dispatch, parsed) if r is not None]
            if not replies:
                return None
            out = jsonrpc.to_bytes(f"[{','.join(replies)}]")
        else:
            text = self._dispatch(parsed)
            if text is None:
                return None
            out = jsonrpc.to_bytes(text)
        if len(out) > cfg.max_queued_bytes_per_connection:
            self.request.errors += 1
            return jsonrpc.to_bytes(
                _error_line(_reply_id(parsed), _too_big(len(out), cfg.max_queued_bytes_per_connection))
            )
        return out

    def _dispatch(self, msg: jsonrpc.Message) -> str | None:
        """One call: its reply as a line of text (None for a notification)."""
        conn = self.request
        conn.requests += 1
        if isinstance(msg, jsonrpc.Invalid):
            conn.errors += 1
            return _error_line(msg.id, msg.error)
        name = msg.method
        app = self.server.app
        method = app.registry.find(name)
        try:
            if method is None:
                raise MethodNotFound(f"method not found: {name!r} (see `methods`)", {"method": name})
            counts = conn.by_method.get(name)
            if counts is None:
                counts = conn.by_method[name] = [0, 0]
            counts[0] += 1
            if conn.peer.rank < method.rank:
                require(conn.peer.role, method.role, name)
            value = method.handler(Call(app, conn.peer, conn, method), **method.bind(msg))
            if msg.notification:
                return None
            return jsonrpc.result_line(msg.id, value)
        except RpcError as e:
            self._failed(method)
            return None if msg.notification else _error_line(msg.id, e)
        except Exception:
            self._failed(method)
            log.exception("internal error in %s", name)
            err = InternalError(f"internal error in {name}; ipcd's log has the details")
            return None if msg.notification else _error_line(msg.id, err)

    def _failed(self, method: Method | None) -> None:
        conn = self.request
        conn.errors += 1
        if method is not None:
            conn.by_method[method.name][1] += 1

    def _send_error(self, err: RpcError) -> None:
        try:
            self.request.send(jsonrpc.to_bytes(_error_line(None, err)))
        except OSError:
            pass


class ControlServer(socketserver.ThreadingUnixStreamServer):
    # Drain on stop: handlers are told to stop (SHUT_RD) and joined.
    block_on_close = True
    daemon_threads = False
    # DESIGN.md: listen with SOMAXCONN, as systemd's Backlog= default.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, sock: socket.socket, app: App) -> None:
        """Serve `sock`, a listening AF_UNIX stream socket (bound or adopted by the caller)."""
        self.app = app
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
                sock.send(jsonrpc.to_bytes(_error_line(None, refused)))
            except OSError:
                pass
            sock.close()
            return
        # A peer that stops reading gets its writes timed out, not the daemon stuck.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.app.config.control.idle_timeout_s))
        super().process_request(conn, client_address)  # type: ignore[arg-type]  # the request is the connection

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
        return {"active": active, "total": self.total, "refused": self.refused, "max": cfg.max_connections}

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


def _error_line(req_id: Any, err: RpcError) -> str:
    return jsonrpc.dumps(jsonrpc.error(req_id, err))


def _reply_id(parsed: jsonrpc.Parsed) -> Any:
    return None if isinstance(parsed, list) else parsed.id


def _too_big(size: int, cap: int) -> LimitReached:
    return LimitReached(
        f"the reply would be {size} bytes; max_queued_bytes_per_connection = {cap}",
        "max_queued_bytes_per_connection",
        cap,
    )


def _idle_error(idle_s: float, partial: bool) -> LimitReached:
    what = "a request line left unfinished" if partial else "idle"
    return LimitReached(f"{what} for {idle_s:g} s: closing", "idle_timeout_s", idle_s)


def _timeval(seconds: float) -> bytes:
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1e6))
