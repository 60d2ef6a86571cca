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
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ipcd.control.access import Peer, identify, require
from ipcd.control.app import UNKNOWN_METHOD, App, Call
from ipcd.control.streams import Outbox, Stream
from ipcd.errors import InternalError, LimitReached, RpcError
from ipcd.wire import jsonrpc

log = logging.getLogger("ipcd")
T = TypeVar("T")

# -- the control server ------------------------------------------------------


class ClientConnection:
    """One accepted control connection: its socket, peer, streams, counters.

    socketserver passes it to the handler as `request`.
    """

    def __init__(self, sock: socket.socket, peer: Peer, server: ControlServer) -> None:
        self.sock = sock
        self.peer = peer
        self.server = server
        self.connected_at = time.time()
        self.requests = 0
        self.outbox: Outbox | None = None
        self.streams: set[Stream] = set()
        self._attached: dict[type, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        with self._wlock:
            self.sock.sendall(data)

    def open_stream(self, name: str) -> Stream:
        with self._lock:
            if self.outbox is None:
                c = self.server.app.config.control
                self.outbox = Outbox(self, c.stream_queue, c.max_queued_bytes_per_connection)
                self.outbox.hold()  # released once the subscribing reply is out
            stream = Stream(self, name)
            self.streams.add(stream)
            return stream

    def attach(self, kind: type[T], make: Callable[[], T]) -> T:
        """The connection's one `kind` of state (a subscription...), made on first use."""
        with self._lock:
            value = self._attached.get(kind)
        if value is None:  # made outside the lock: `make` may open a stream, which takes it
            value = make()
            with self._lock:
                value = self._attached.setdefault(kind, value)
        return value  # type: ignore[no-any-return]

    def attachment(self, kind: type[T]) -> T | None:
        with self._lock:
            return self._attached.get(kind)

    def detach(self, kind: type) -> None:
        with self._lock:
            self._attached.pop(kind, None)

    def stream_closed(self, stream: Stream) -> None:
        with self._lock:
            self.streams.discard(stream)

    def on_close(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                run_now = True
            else:
                self._closers.append(fn)
                run_now = False
        if run_now:
            fn()

    def stop(self) -> None:
        """Stop reading (graceful stop): queued requests are still answered."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            closers, self._closers = self._closers, []
            for s in self.streams:
                s.closed = True
            self.streams.clear()
        for fn in closers:
            try:
                fn()
            except Exception:
                log.exception("error while closing a connection's subscriptions")
        if self.outbox is not None:
            self.outbox.close()
            self.abort()
            self.outbox.join(5.0)
        self.sock.close()


class ControlHandler(socketserver.BaseRequestHandler):
    """Reads lines, answers each in order; exits on EOF, idle timeout or stop."""

    request: ClientConnection
    server: ControlServer

    def handle(self) -> None:
        conn = self.request
        app = self.server.app
        framer = jsonrpc.LineFramer(app.config.control.max_request_bytes)
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        deadline = time.monotonic() + app.config.control.idle_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if conn.streams:  # a follower may be silent for as long as it likes
                    deadline = time.monotonic() + app.config.control.idle_timeout_s
                    continue
                self._send_error(
                    LimitReached(
                        f"idle for {app.config.control.idle_timeout_s:g} s: closing",
                        "idle_timeout_s",
                        app.config.control.idle_timeout_s,
                    )
                )
                return
            if not poller.poll(left * 1000 + 1):
                continue
            try:
                data = conn.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                lines = framer.feed(data)
            except jsonrpc.LineTooLong as e:  # answer what came before it, then the error, then close
                for line in e.lines:
                    if not self._handle_line(line):
                        return
                self._send_error(e)
                return
            for line in lines:
                if not self._handle_line(line):
                    return
            if lines:
                deadline = time.monotonic() + app.config.control.idle_timeout_s

    def _handle_line(self, line: bytes) -> bool:
        parsed = jsonrpc.parse_line(line)
        if parsed is None:
            return True
        conn = self.request
        outbox = conn.outbox
        if outbox is not None:
            outbox.hold()
        try:
            if isinstance(parsed, list):
                replies = [r for r in (self._dispatch(m) for m in parsed) if r is not None]
                out = f"[{','.join(replies)}]" if replies else None
            else:
                out = self._dispatch(parsed)
            if out is not None:
                conn.send(jsonrpc.to_bytes(out))
            return True
        except OSError:
            return False
        finally:
            if outbox is not None:
                outbox.release()
            elif conn.outbox is not None:  # this call opened the first stream
                conn.outbox.release()

    def _dispatch(self, msg: jsonrpc.Message) -> str | None:
        """One call: its reply as a line of text (None for a notification)."""
        app = self.server.app
        conn = self.request
        app.requests.add("total")
        conn.requests += 1
        if isinstance(msg, jsonrpc.Invalid):
            app.requests.add("errors")
            return _error_line(msg.id, msg.error)
        name = UNKNOWN_METHOD
        try:
            method = app.registry.get(msg.method)
            app.calls.add(name := method.name)
            require(conn.peer.role, method.role, method.name)
            params = method.bind(msg)
            value = method.handler(Call(app, conn.peer, conn, method), **params)
            if msg.notification:
                return None
            return jsonrpc.result_line(msg.id, value)
        except RpcError as e:
            app.requests.add("errors")
            app.call_errors.add(name)
            return None if msg.notification else _error_line(msg.id, e)
        except Exception:
            app.requests.add("errors")
            app.call_errors.add(name)
            log.exception("internal error in %s", msg.method)
            err = InternalError(f"internal error in {msg.method}; ipcd's log has the details")
            return None if msg.notification else _error_line(msg.id, err)

    def _send_error(self, err: RpcError) -> None:
        try:
            self.request.send(jsonrpc.encode(jsonrpc.error(None, err)))
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
        self.last_loop = time.monotonic()  # the accept loop turned (the watchdog's health check)
        super().__init__(sock.getsockname(), ControlHandler, bind_and_activate=False)
        self.socket.close()  # the placeholder socketserver made
        self.socket = sock

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
        refused = self._admit(peer)
        if refused is not None:
            self.app.connections.add("refused")
            try:
                sock.setblocking(False)
                sock.send(jsonrpc.encode(jsonrpc.error(None, refused)))
            except OSError:
                pass
            sock.close()
            return
        conn = ClientConnection(sock, peer, self)
        # A peer that stops reading gets its writes timed out, not the daemon stuck.
        timeout_s = self.app.config.control.idle_timeout_s
        sec = int(timeout_s)
        usec = int((timeout_s - sec) * 1e6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(sec, usec))
        with self._lock:
            self._conns.add(conn)
        super().process_request(conn, client_address)  # type: ignore[arg-type]  # the request is the connection

    def _admit(self, peer: Peer) -> LimitReached | None:
        cfg = self.app.config.control
        with self._lock:
            active = len(self._conns)
            if active >= cfg.max_connections:
                return LimitReached(
                    f"too many connections ({active}; max_connections = {cfg.max_connections})",
                    "max_connections",
                    cfg.max_connections,
                )
            mine = self._per_uid.get(peer.uid, 0)
            if peer.role != "admin" and mine >= cfg.max_connections_per_uid:
                return LimitReached(
                    f"too many connections from uid {peer.uid} "
                    f"({mine}; max_connections_per_uid = {cfg.max_connections_per_uid})",
                    "max_connections_per_uid",
                    cfg.max_connections_per_uid,
                )
            # Counted here, in the accepting thread, so that a burst of connects
            # cannot slip past the limit before the handler threads run.
            self._per_uid[peer.uid] = mine + 1
        self.app.connections.add("active")
        self.app.connections.add("total")
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
            self._idle.notify_all()
        self.app.connections.add("active", -1)

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


def _timeval(sec: int, usec: int) -> bytes:
    return struct.pack("ll", sec, usec)
