"""One control connection's thread: read lines, answer each in order.

`ControlHandler` frames the bytes it reads (`jsonrpc.LineFramer`),
dispatches each line through the app's method registry and writes the
replies in order, a batch of them per write.  A write method's reply that
waits for a commit (`app.Deferred`) is waited for just before the replies
are written, or before the next call that is not such a write, whichever
comes first: the writes that follow each other in one read (a pipelined
client's, a batch's) share a commit, and no other work (a slow query) holds
a write uncommitted while others can already read it.  What it may hold is bounded:
an unfinished line, a reply being written and large requests being handled
count in the server's `budget` and `gate` (`budget`); accepting, counting
and stopping connections is `server`'s.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from ipcd.control.access import require
from ipcd.control.app import Call, Deferred
from ipcd.control.budget import LARGE_REQUEST_BYTES, SMALL_BYTES
from ipcd.control.connection import ClientConnection
from ipcd.control.registry import Method
from ipcd.errors import InternalError, LimitReached, MethodNotFound, RpcError
from ipcd.wire import jsonrpc

if TYPE_CHECKING:
    from ipcd.control.server import ControlServer

log = logging.getLogger("ipcd")

FLUSH_BYTES = 64 * 1024  # replies are written once this much has piled up
LATER_BYTES = 128  # what a reply waiting for its commit counts for, until it is made


class Later:
    """A reply waiting for a commit: the call's id and what its method returned; then the reply."""

    __slots__ = ("id", "deferred", "method", "notification", "text", "handler", "sent", "lost")

    def __init__(self, req_id: Any, deferred: Deferred, method: Method, notification: bool) -> None:
        self.id = req_id
        self.deferred = deferred
        self.method = method
        self.notification = notification
        self.text: str | None = None  # the reply, once settled (None for a notification)
        self.handler: ControlHandler | None = None  # once handed off: whose connection it goes to
        self.sent: threading.Lock | None = None  # held until it is sent, or lost
        self.lost = False  # not sent: the connection is aborted

    def reply(self, error: RpcError | None) -> None:
        """The write is done (on the committing thread): send its reply, then release `sent`.

        Never blocks: a reply the socket does not take at once is finished
        by a thread of its own (`send_soon`); one that cannot be sent at all
        aborts the connection, as a failed send of the handler's own does.
        A failed write is counted here, before its reply goes: while a reply
        is handed off, the handler thread counts nothing.
        """
        handler, sent = self.handler, self.sent
        assert handler is not None and sent is not None
        try:
            if error is None:
                data = jsonrpc.to_bytes(jsonrpc.result_line(self.id, self.deferred.value))
            else:
                handler._failed(self.method)
                data = jsonrpc.to_bytes(error_line(self.id, error))
        except BaseException:
            self.finished(False)
            raise
        handler.request.send_soon(data, self.finished)

    def finished(self, ok: bool) -> None:
        """Sent (`ok`), or lost: then the connection is aborted, so no later reply goes out without this one."""
        assert self.handler is not None and self.sent is not None
        self.lost = not ok
        if not ok:
            self.handler.request.abort()  # (send_soon has done it already; once more costs nothing)
        self.sent.release()


class ControlHandler(socketserver.BaseRequestHandler):
    """Reads lines, answers each in order; exits on EOF, idle timeout or stop.

    The hot path: one blocking `recv` per read (the idle timeout is the
    socket's SO_RCVTIMEO, not a poll per read), every complete line answered,
    the replies of one read written with one `send` (or one per
    `FLUSH_BYTES`, when they pile up).
    """

    request: ClientConnection
    server: ControlServer
    _taken = 0  # budget bytes held by the replies not written yet
    _buffered = 0  # and by the unfinished request line
    _unsettled: list[Later] | None = None  # writes waiting for their commit, in call order
    _handed: Later | None = None  # a reply left to the thread that commits its write (`_hand_off`)

    def handle(self) -> None:
        try:
            self._serve()
        finally:
            if self._handed is not None:
                self._settle_handed()
            self._hold_buffered(0)

    def _settle_handed(self) -> bool:
        """Wait until the reply left to a committing thread is out (nothing overtakes it); False if lost."""
        handed, self._handed = self._handed, None
        assert handed is not None and handed.sent is not None
        handed.sent.acquire()
        return not handed.lost

    def _hand_off(self, later: Later) -> bool:
        """Leave a lone write's reply to the thread that commits it: this one reads on at once.

        For a read whose one call is a write (the closed-loop client's): the
        handler goes back to `recv` and the reply is sent by whichever thread
        commits the write, so the commit needs no hand-back to this thread.
        False if it cannot be (not such a write, or committed already).
        """
        d = later.deferred
        if d.hand_off is None or later.notification or self._unsettled != [later]:
            return False
        later.handler = self
        later.sent = threading.Lock()
        later.sent.acquire()
        self._handed = later
        if not d.hand_off(later.reply):
            self._handed = later.handler = later.sent = None  # no cycle left (later <-> handler)
            return False
        self._unsettled = None
        return True

    def _serve(self) -> None:
        conn = self.request
        cfg = self.server.app.config.control
        framer = jsonrpc.LineFramer(cfg.max_request_bytes)
        idle_s = cfg.idle_timeout_s
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(idle_s))
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
            pending = framer.pending
            if (pending or self._buffered) and not self._hold_buffered(pending):
                self._answer(lines)
                self._send_error(_no_budget(pending, cfg.max_queued_bytes, "an unfinished request line of"))
                return
            if not pending:
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
        """Answer `lines` in order; False if the peer is gone.

        Replies are written as they pile up past `FLUSH_BYTES`, not all at
        the end: a read of 64 KiB can hold thousands of requests, and a peer
        that sends them and never reads must not make ipcd build every reply
        first.  What waits for such a peer is one reply and less than
        `FLUSH_BYTES`, until the send times out (`idle_timeout_s`).
        """
        if self._handed is not None and not self._settle_handed():
            return False  # the connection is aborted: what it sent since is not answered
        conn = self.request
        outbox = conn.outbox
        if outbox is not None:
            outbox.hold()  # a stream's notifications wait until these replies are out
        out: list[bytes | Later] = []
        size = 0
        try:
            for line in lines:
                if len(line) > LARGE_REQUEST_BYTES:  # parsed, it may take 25 times its size: a few at a time
                    with self.server.gate.enter(self._budget_uid(), len(line)):
                        reply = self._handle_line(line)
                else:
                    reply = self._handle_line(line)
                if reply is None:
                    continue
                out.append(reply)
                size += LATER_BYTES if isinstance(reply, Later) else len(reply)
                if size >= FLUSH_BYTES:
                    self._write(out)
                    out, size = [], 0
            if out and not (len(out) == 1 and type(out[0]) is Later and conn.outbox is None and self._hand_off(out[0])):
                self._write(out)
            return True
        except OSError:
            return False
        finally:
            if self._unsettled:  # not written (the peer is gone): its writes are committed all the same
                self._settle_all()
            if self._taken:
                self._give_back()
            if outbox is not None:
                outbox.release()
            elif conn.outbox is not None:  # one of these calls opened the first stream
                conn.outbox.release()

    def _write(self, replies: list[bytes | Later]) -> None:
        """Write `replies`, waiting first for the commits of those that wait for one."""
        try:
            if len(replies) == 1 and type(replies[0]) is bytes:  # one reply, ready: the closed-loop client
                self.request.send(replies[0])
                return
            if self._unsettled:
                self._settle_all()
            ready = [self._made(r) if isinstance(r, Later) else r for r in replies]
            data = ready[0] if len(ready) == 1 else b"".join(ready)
            if data:
                self.request.send(data)
        finally:
            self._give_back()

    def _hold_buffered(self, pending: int) -> bool:
        """Count an unfinished request line over `SMALL_BYTES` in the budget; False if it has no room."""
        held = pending if pending > SMALL_BYTES else 0
        budget = self.server.budget
        if held > self._buffered and not budget.take(self._budget_uid(), held - self._buffered):
            return False
        if held < self._buffered:
            budget.give(self._budget_uid(), self._buffered - held)
        self._buffered = held
        return True

    def _give_back(self) -> None:
        if self._taken:
            self.server.budget.give(self._budget_uid(), self._taken)
            self._taken = 0

    def _budget_uid(self) -> int | None:
        peer = self.request.peer
        return None if peer.role == "admin" else peer.uid  # an admin's replies are counted, never refused

    def _handle_line(self, line: bytes) -> bytes | Later | None:
        parsed = jsonrpc.parse_line(line)
        if parsed is None:
            return None
        if not isinstance(parsed, list):
            reply = self._dispatch(parsed)
            if reply is None or isinstance(reply, Later):
                return reply  # a Later is small, and made once its commit is done (`_write`)
            if len(reply) <= SMALL_BYTES:
                out = jsonrpc.to_bytes(reply)
                if len(out) <= SMALL_BYTES:  # the common reply: within any cap (>= SMALL_BYTES), no budget
                    return out
            return self._sized(parsed, reply, len(reply))
        cfg = self.server.app.config.control
        if len(parsed) > cfg.max_batch:
            self.request.requests += 1
            self.request.errors += 1
            msg = f"batch of {len(parsed)} calls; max_batch = {cfg.max_batch}"
            err = LimitReached(msg, "max_batch", cfg.max_batch)
            return jsonrpc.to_bytes(error_line(None, err))
        text, size = self._batch(parsed, cfg.max_queued_bytes_per_connection)
        return self._sized(parsed, text, size)

    def _sized(self, parsed: jsonrpc.Parsed, text: str | None, size: int) -> bytes | None:
        """A reply (`size` in characters: never more than its bytes) within the caps, or the error to send instead."""
        cfg = self.server.app.config.control
        cap = cfg.max_queued_bytes_per_connection
        if size <= cap and text is not None:
            out = jsonrpc.to_bytes(text)
            size = len(out)
        if size > cap:
            self.request.errors += 1
            return jsonrpc.to_bytes(error_line(_reply_id(parsed), _too_big(size, cap)))
        if text is None:
            return None
        if size > SMALL_BYTES:
            if not self.server.budget.take(self._budget_uid(), size):
                self.request.errors += 1
                return jsonrpc.to_bytes(error_line(_reply_id(parsed), _no_budget(size, cfg.max_queued_bytes)))
            self._taken += size
        return out

    def _batch(self, calls: list[jsonrpc.Message], cap: int) -> tuple[str | None, int]:
        """A batch's reply as text (None: only notifications) and its size in characters.

        Every call is made; once the replies pass `cap` they are only counted,
        not kept, since the batch will be answered with -32002.
        """
        replies: list[str] = []
        size = 1
        # Every call first, then their commits: the batch's writes share them.
        dispatched = [self._dispatch(msg) for msg in calls]
        if self._unsettled:
            self._settle_all()
        for text in [r.text if isinstance(r, Later) else r for r in dispatched]:
            if text is None:
                continue
            size += len(text) + 1
            if size <= cap:
                replies.append(text)
            elif replies:
                replies = []
        if size == 1:
            return None, 0
        return (f"[{','.join(replies)}]" if size <= cap else None), size

    def _dispatch(self, msg: jsonrpc.Message) -> str | Later | None:
        """One call: its reply as a line of text (None for a notification), or a `Later`."""
        conn = self.request
        conn.requests += 1
        if isinstance(msg, jsonrpc.Invalid):
            conn.errors += 1
            return error_line(msg.id, msg.error)
        name = msg.method
        app = self.server.app
        method = app.registry.methods.get(name)
        try:
            if method is None:
                raise MethodNotFound(f"method not found: {name!r} (see `methods`)", {"method": name})
            counts = conn.by_method.get(name)
            if counts is None:
                counts = conn.by_method[name] = [0, 0]
            counts[0] += 1
            peer = conn.peer
            if peer.rank < method.rank:
                require(peer.role, method.role, name)
            if self._unsettled and not method.defers:  # it may be slow, or read what they wrote
                self._settle_all()
            if msg.params is None and method.bare:  # nothing to bind (ping, status)
                value = method.handler(Call(app, peer, conn, method))
            else:
                value = method.handler(Call(app, peer, conn, method), **method.bind(msg))
            if type(value) is Deferred:
                later = Later(msg.id, value, method, msg.notification)
                if self._unsettled is None:
                    self._unsettled = []
                self._unsettled.append(later)
                return later
            if msg.notification:
                return None
            return jsonrpc.result_line(msg.id, value)
        except Exception as e:
            return self._error_reply(method, name, msg.id, msg.notification, e)

    def _made(self, later: Later) -> bytes:
        return jsonrpc.to_bytes(later.text) if later.text is not None else b""

    def _settle_all(self) -> None:
        """Wait for the commits of the writes not settled yet, in call order; each gets its reply."""
        pending, self._unsettled = self._unsettled or [], []
        for later in pending:
            later.text = self._settle(later)

    def _settle(self, later: Later) -> str | None:
        """Wait for a `Later`'s commit: its reply (None for a notification), the error if it failed."""
        try:
            later.deferred.wait()
            if later.notification:
                return None
            return jsonrpc.result_line(later.id, later.deferred.value)
        except Exception as e:
            return self._error_reply(later.method, later.method.name, later.id, later.notification, e)

    def _error_reply(
        self, method: Method | None, name: str, req_id: Any, notification: bool, e: Exception
    ) -> str | None:
        """A call that raised: counted; its error line (None for a notification), -32603 if not an RpcError."""
        self._failed(method)
        if not isinstance(e, RpcError):
            log.error("internal error in %s", name, exc_info=e)
            e = InternalError(f"internal error in {name}; ipcd's log has the details")
        return None if notification else error_line(req_id, e)

    def _failed(self, method: Method | None) -> None:
        conn = self.request
        conn.errors += 1
        if method is not None:
            conn.by_method[method.name][1] += 1

    def _send_error(self, err: RpcError) -> None:
        if self._handed is not None:
            self._settle_handed()
        try:
            self.request.send(jsonrpc.to_bytes(error_line(None, err)))
        except OSError:
            pass


def error_line(req_id: Any, err: RpcError) -> str:
    return jsonrpc.dumps(jsonrpc.error(req_id, err))


def _reply_id(parsed: jsonrpc.Parsed) -> Any:
    return None if isinstance(parsed, list) else parsed.id


def _too_big(size: int, cap: int) -> LimitReached:
    return LimitReached(
        f"the reply would be {size} bytes; max_queued_bytes_per_connection = {cap}",
        "max_queued_bytes_per_connection",
        cap,
    )


def _no_budget(size: int, cap: int, what: str = "a reply of") -> LimitReached:
    return LimitReached(
        f"no room for {what} {size} bytes: ipcd holds as much as it may for this uid's connections "
        f"(max_queued_bytes = {cap}, of which one uid may hold half): read what was sent, or ask for less",
        "max_queued_bytes",
        cap,
    )


def _idle_error(idle_s: float, partial: bool) -> LimitReached:
    what = "a request line left unfinished" if partial else "idle"
    return LimitReached(f"{what} for {idle_s:g} s: closing", "idle_timeout_s", idle_s)


def timeval(seconds: float) -> bytes:
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1e6))
