"""`ipcd.control.server`: in this process with a test-only registry, then in a real ipcd.

First no daemon, no store: a `ControlServer` serves methods declared here,
so what the server itself promises (errors, limits, streams, order) is
tested in milliseconds.  Then the protocol against a real ipcd over its real
socket: batches, plain commands, many and hostile clients, the limits at
their edges.  What needs a process (signals, systemd, exit codes) is tested
against real daemons elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Conn, Ipcd, needs_program, wait_for, wait_only_connection

from ipcd.config import Config, parse
from ipcd.control import connection
from ipcd.control.access import Peer, Policy, make_policy
from ipcd.control.app import App, Call, Deferred
from ipcd.control.budget import SMALL_BYTES, QueueBudget
from ipcd.control.connection import ClientConnection
from ipcd.control.handler import FLUSH_BYTES, timeval
from ipcd.control.registry import Param, Registry
from ipcd.control.server import ControlServer
from ipcd.control.streams import Outbox
from ipcd.errors import InternalError, RpcError

TEST = Registry()


@TEST.method("echo", role="read", doc="Its params back.", params=(Param("value", "any"),))
def echo(call: Call, value: Any) -> Any:
    return value


@TEST.method("boom", role="read", doc="A bug: an exception nobody expected.")
def boom(call: Call) -> Any:
    raise ZeroDivisionError("a handler's bug")


@TEST.method("admin.only", role="admin", doc="Needs admin.")
def admin_only(call: Call) -> Any:
    return "yes"


@TEST.method("big", role="read", doc="A string of n x's.", params=(Param("n", "integer", required=True),))
def big(call: Call, n: int) -> Any:
    return "x" * n


RELEASE = threading.Event()


@TEST.method("hold", role="read", doc="Waits for RELEASE.", params=(Param("pad", "string"),))
def hold(call: Call, pad: str | None) -> Any:
    return RELEASE.wait(10)


@TEST.method("ticks", role="read", stream=True, doc="A stream of n ticks.", params=(Param("n", "integer"),))
def ticks(call: Call, n: int) -> Any:
    stream = call.conn.open_stream("ticks")
    for i in range(n):
        stream.push("tick", {"i": i})
    return {"streaming": n}


HANDED: list[Callable[[RpcError | None], None]] = []  # replies left to "the committing thread": the test


@TEST.method(
    "handed", role="read", defers=True, doc="Its value, the reply left to HANDED.", params=(Param("value", "any"),)
)
def handed(call: Call, value: Any) -> Deferred:
    done = threading.Event()

    def hand_off(reply: Callable[[RpcError | None], None]) -> bool:
        HANDED.append(lambda error: (reply(error), done.set()))
        return True

    return Deferred(lambda: None if done.wait(10) else None, value, hand_off)


@dataclasses.dataclass(frozen=True)
class ReadersOnly(Policy):
    """Every peer gets the read role, root included (the suite often runs as root)."""

    def role(self, uid: int, gid: int, groups: tuple[int, ...] = ()) -> str:
        return "read"


class Served:
    def __init__(self, server: ControlServer, path: str) -> None:
        self.server = server
        self.path = path

    def conn(self, timeout_s: float = 5.0) -> Conn:
        return Conn(self.path, timeout_s)


@pytest.fixture
def serve(short_tmp: Path) -> Iterator[Callable[..., Served]]:
    """Factory: serve(config_toml="") -> a ControlServer on TEST, serving in a thread."""
    started: list[tuple[ControlServer, threading.Thread]] = []

    def make(config_toml: str = "", readers_only: bool = False) -> Served:
        cfg: Config = parse(config_toml.encode())
        path = str(short_tmp / f"c{len(started)}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(64)  # listens now: no sleep before the first connect
        policy = ReadersOnly(0) if readers_only else make_policy(cfg.access, os.geteuid())
        app = App(cfg, policy, TEST)
        server = ControlServer(sock, app)
        t = threading.Thread(target=server.serve_forever, args=(0.01,))
        t.start()
        started.append((server, t))
        return Served(server, path)

    yield make
    for server, t in started:
        server.shutdown()
        t.join()
        server.stop(grace_s=2.0)


def test_a_handler_bug_is_32603_with_one_traceback_and_the_connection_lives_on(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    s = serve()
    with caplog.at_level(logging.ERROR, logger="ipcd"), s.conn() as c:
        err = c.call("boom")
        assert err["code"] == -32603 and "boom" in err["message"] and "ZeroDivision" not in err["message"]
        assert c.call("echo", {"value": [1, 2]}) == [1, 2]  # the same connection, still served
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is ZeroDivisionError  # type: ignore[index]
    assert s.server.requests_status() == {"total": 2, "errors": 1}
    assert s.server.requests_by_method() == {"boom": (1, 1), "echo": (1, 0)}


def hand_off_one(c: Conn, req_id: int) -> None:
    """Call `handed` and wait until its reply is left to HANDED (as to a committing thread)."""
    c.send_json({"jsonrpc": "2.0", "id": req_id, "method": "handed", "params": {"value": "v"}})
    wait_for(lambda: len(HANDED) == 1, 5, "the handler to leave the reply to the committing thread")


def test_a_reply_left_to_the_committing_thread_keeps_its_place_and_its_error_is_counted(
    serve: Callable[..., Served],
) -> None:
    s = serve()
    HANDED.clear()
    with s.conn() as c:
        hand_off_one(c, 1)
        c.send_json({"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {"value": "after"}})
        HANDED.pop()(InternalError("the store could not be written"))  # as a failed commit would, from here
        first = c.recv_json()
        assert first["id"] == 1 and first["error"]["code"] == -32603  # not overtaken by the echo read meanwhile
        assert c.recv_json() == {"jsonrpc": "2.0", "id": 2, "result": "after"}
        hand_off_one(c, 3)
        HANDED.pop()(None)
        assert c.recv_json() == {"jsonrpc": "2.0", "id": 3, "result": "v"}
    assert s.server.requests_status() == {"total": 3, "errors": 1}
    assert s.server.requests_by_method() == {"handed": (2, 1), "echo": (1, 0)}


def test_a_reply_the_socket_cannot_take_at_once_is_finished_by_a_thread_of_its_own() -> None:
    """The committing thread sends replies for others: a full socket must not block it."""
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.setblocking(False)
        filled = 0
        while True:  # the peer reads nothing: its buffer, and ours, fill up
            try:
                filled += a.send(b"x" * 4096)
            except BlockingIOError:
                break
        a.setblocking(True)
        conn = ClientConnection(a, None, None)  # type: ignore[arg-type]
        outcome: list[bool] = []
        done = threading.Event()
        sender = threading.Thread(
            target=conn.send_soon, args=(b"the reply\n", lambda ok: (outcome.append(ok), done.set()))
        )
        sender.start()
        sender.join(5)
        assert not sender.is_alive(), "send_soon blocked on a full socket"
        assert not done.is_set()  # not sent yet: nobody read
        got = b""
        while not got.endswith(b"the reply\n"):
            got += b.recv(65536)
        assert len(got) == filled + len(b"the reply\n")
        assert done.wait(5) and outcome == [True]


def test_a_reply_larger_than_the_socket_takes_at_once_arrives_whole_and_in_order() -> None:
    """A reply far larger than the socket buffer, sent while the peer reads: whole, in order."""
    a, b = socket.socketpair()
    with a, b:
        data = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffer
        got = bytearray()

        def read() -> None:
            while len(got) < len(data):
                got.extend(b.recv(65536))

        reader = threading.Thread(target=read)
        reader.start()
        ClientConnection(a, None, None).send(data)  # type: ignore[arg-type]
        reader.join(10)
        assert bytes(got) == data
        a.close()
        with pytest.raises(OSError):  # a closed socket: an OSError, as sendall's, never a hang
            ClientConnection(a, None, None).send(b"x")  # type: ignore[arg-type]


def test_a_send_that_keeps_the_gil_takes_bytes_only_and_a_length_a_c_int_holds() -> None:
    """libc's send is called without ctypes argtypes: a str would go as wchar_t *, and a length
    of 2**31 or more would be sign-extended into a huge size_t."""
    assert connection._NOWAIT_MAX < 2**31
    a, b = socket.socketpair()
    with a, b:
        for wrong in ("text", bytearray(b"x"), memoryview(b"x")):
            with pytest.raises(TypeError):
                connection.send_nowait(a.fileno(), wrong)  # type: ignore[arg-type]
        assert connection.send_nowait(a.fileno(), b"sent") == 4
        assert b.recv(16) == b"sent"


def test_a_connection_is_not_closed_while_another_thread_writes_to_it() -> None:
    """The fd's number may go to the next accepted client the moment it is closed: a writer
    that has read it (a publisher's direct write, a committing thread's reply) must be done first."""
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn = ClientConnection(a, None, None)  # type: ignore[arg-type]
        data = b"n" * (1 << 20)
        sent = conn.try_send(data)  # the socket takes part: the write lock stays held for the rest
        assert 0 < sent < len(data)
        closer = threading.Thread(target=conn.close)
        closer.start()

        def peer_shut_down() -> bool:  # close() has begun: it aborts the connection first
            try:
                b.send(b"x")
            except BrokenPipeError:
                return True
            return False

        wait_for(peer_shut_down, 5, "close() to abort the connection")
        closer.join(0.5)
        assert closer.is_alive(), "the socket was closed while a write held it"
        assert a.fileno() != -1
        conn.finish_send(None)  # the writer gives up (the connection is going): then it closes
        closer.join(5)
        assert not closer.is_alive() and a.fileno() == -1


def test_a_write_that_outlasts_close_wait_s_is_logged_and_the_socket_closed_all_the_same(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connection, "CLOSE_WAIT_S", 0.1)
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn = ClientConnection(a, None, None)  # type: ignore[arg-type]
        data = b"n" * (1 << 20)
        assert 0 < conn.try_send(data) < len(data)  # the write lock stays held, and nobody finishes it
        with caplog.at_level(logging.WARNING, logger="ipcd"):
            conn.close()
        assert a.fileno() == -1
        assert "whose write did not end in 0.1 s" in caplog.text
        conn.finish_send(None)  # the writer lets go at last: nothing left to write to


def test_a_reply_that_cannot_be_finished_in_the_send_timeout_aborts_the_connection() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        while True:
            try:
                a.send(b"x" * 4096)
            except BlockingIOError:
                break
        a.setblocking(True)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(0.2))  # as idle_timeout_s sets it
        outcome: list[bool] = []
        done = threading.Event()
        ClientConnection(a, None, None).send_soon(b"lost\n", lambda ok: (outcome.append(ok), done.set()))  # type: ignore[arg-type]
        assert done.wait(5) and outcome == [False]
        b.settimeout(5)
        got = b""
        while chunk := b.recv(65536):  # what was sent, then the end (the abort): never a later reply
            got += chunk
        assert not got.endswith(b"lost\n")


def test_a_handed_off_reply_that_cannot_be_sent_ends_the_connection_before_the_next_call(
    serve: Callable[..., Served],
) -> None:
    s = serve()
    HANDED.clear()
    with s.conn() as c:
        hand_off_one(c, 1)
        c.send_json({"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {"value": "never"}})
        c.sock.shutdown(socket.SHUT_RD)  # the reply cannot be sent now (EPIPE)
        HANDED.pop()(None)
        wait_for(lambda: not s.server.live(), 5, "the connection to be closed")
    assert s.server.requests_status()["total"] == 1  # the echo read meanwhile was never run


def test_a_notification_that_fails_gets_no_reply(serve: Callable[..., Served]) -> None:
    s = serve()
    with s.conn() as c:
        c.send_json({"jsonrpc": "2.0", "method": "boom"})
        c.send_json({"jsonrpc": "2.0", "method": "echo", "params": {"value": "after"}, "id": 9})
        assert c.recv_json() == {"jsonrpc": "2.0", "id": 9, "result": "after"}


def test_role_is_checked_before_params(serve: Callable[..., Served]) -> None:
    s = serve(readers_only=True)
    with s.conn() as c:
        err = c.call("admin.only", {"bogus": 1})
        assert err["code"] == -32001 and err["data"] == {"required_role": "admin"}


def test_replies_come_in_order_and_a_stream_result_before_its_notifications(serve: Callable[..., Served]) -> None:
    s = serve()
    with s.conn() as c:
        for i in range(3):
            c.send_json({"jsonrpc": "2.0", "method": "echo", "params": {"value": i}, "id": i})
        c.send_json({"jsonrpc": "2.0", "method": "ticks", "params": {"n": 50}, "id": "t"})
        got = [c.recv_json() for _ in range(4 + 50)]
    assert [g["result"] for g in got[:3]] == [0, 1, 2]
    assert got[3] == {"jsonrpc": "2.0", "id": "t", "result": {"streaming": 50}}
    assert [g["params"]["i"] for g in got[4:]] == list(range(50))


def test_a_stream_reader_that_falls_behind_gets_lagged(serve: Callable[..., Served]) -> None:
    s = serve("[control]\nstream_queue = 10\n")
    with s.conn() as c:
        # 5000 ticks are pushed while the reply is held: only 10 fit, the rest are counted.
        assert c.call("ticks", {"n": 5000}) == {"streaming": 5000}
        got = [c.recv_json() for _ in range(11)]
    assert [g["params"]["i"] for g in got[:10]] == list(range(10))
    assert got[10] == {"jsonrpc": "2.0", "method": "lagged", "params": {"stream": "ticks", "missed": 4990}}


def test_a_line_over_max_request_bytes_is_answered_then_closed(serve: Callable[..., Served]) -> None:
    s = serve("[control]\nmax_request_bytes = 100\n")
    with s.conn() as c:
        ok = b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":"x"}}\n'
        c.send(ok + b'{"jsonrpc":"2.0","id":2,"method":"echo","params":{"value":"' + b"y" * 200)
        assert c.recv_json()["result"] == "x"  # the line before the long one is still answered
        err = c.recv_json()["error"]
        assert err["code"] == -32002 and err["data"]["limit"] == "max_request_bytes"
        assert c.at_eof()
    with s.conn() as c:  # others are not disturbed
        assert c.call("echo", {"value": 1}) == 1


def test_an_idle_connection_is_cut_after_idle_timeout(serve: Callable[..., Served]) -> None:
    s = serve("[control]\nidle_timeout_s = 0.2\n")
    with s.conn() as c:
        err = c.recv_json()["error"]  # nothing sent: the server speaks first, then closes
        assert err["code"] == -32002 and err["data"]["limit"] == "idle_timeout_s"
        assert c.at_eof()


def test_connections_are_counted_and_released(serve: Callable[..., Served]) -> None:
    s = serve()
    conns = [s.conn() for _ in range(5)]
    try:
        for c in conns:
            assert c.call("echo", {"value": 0}) == 0
        assert s.server.connections_status()["active"] == 5
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: s.server.connections_status()["active"] == 0, 5, "the five connections to be released")
    assert s.server.connections_status()["total"] == 5
    assert s.server.requests_status() == {"total": 5, "errors": 0}  # counted by connections since closed


# -- limits, each at its edge (DESIGN.md "Limits") -----------------------------------------


def test_a_batch_of_max_batch_calls_is_answered_one_more_is_refused(serve: Callable[..., Served]) -> None:
    s = serve("[control]\nmax_batch = 3\n")
    call = {"jsonrpc": "2.0", "method": "echo", "params": {"value": 1}}
    with s.conn() as c:
        c.send_json([{**call, "id": i} for i in range(3)])
        assert [r["id"] for r in c.recv_json()] == [0, 1, 2]
        c.send_json([{**call, "id": i} for i in range(4)])
        err = c.recv_json()["error"]
        assert err["code"] == -32002 and err["data"] == {"limit": "max_batch", "value": 3}
        assert c.call("echo", {"value": "still here"}) == "still here"


def test_a_reply_over_max_queued_bytes_is_an_error_not_a_memory_spike(serve: Callable[..., Served]) -> None:
    cap = 65536
    s = serve(f"[control]\nmax_queued_bytes_per_connection = {cap}\n")
    with s.conn() as c:
        # Just under the cap goes out whole; one reply over it is -32002, and the connection lives on.
        fits = "x" * (cap - 200)
        assert c.call("echo", {"value": fits}) == fits
        err = c.call("echo", {"value": "x" * 20000 + "y" * (cap - 19000)})
        assert err["code"] == -32002 and err["data"]["limit"] == "max_queued_bytes_per_connection"
        # A batch whose replies together pass it: the same.
        batch = [{"jsonrpc": "2.0", "id": i, "method": "echo", "params": {"value": "z" * 30000}} for i in range(3)]
        c.send_json(batch)
        err = c.recv_json()["error"]
        assert err["code"] == -32002 and err["data"]["limit"] == "max_queued_bytes_per_connection"
        assert c.call("echo", {"value": 2}) == 2


def test_streams_per_connection_are_capped(serve: Callable[..., Served]) -> None:
    s = serve("[control]\nmax_streams_per_connection = 2\n")
    with s.conn() as c:
        assert c.call("ticks", {"n": 0}) == {"streaming": 0}
        assert c.call("ticks", {"n": 0}) == {"streaming": 0}
        err = c.call("ticks", {"n": 0})
        assert err["code"] == -32002 and err["data"]["limit"] == "max_streams_per_connection"
    with s.conn() as c:  # the cap is per connection
        assert c.call("ticks", {"n": 0}) == {"streaming": 0}


def test_a_half_line_trickled_in_is_cut_after_the_idle_timeout_even_with_a_stream_open(
    serve: Callable[..., Served],
) -> None:
    s = serve("[control]\nidle_timeout_s = 0.3\n")
    with s.conn() as c:
        assert c.call("ticks", {"n": 0}) == {"streaming": 0}  # a stream: silence alone is allowed
        c.send(b'{"jsonrpc":"2.0",')
        deadline = time.monotonic() + 5
        cut = None
        while time.monotonic() < deadline:
            c.send(b" ")  # a byte at a time, each well within the timeout
            c.sock.settimeout(0.1)
            try:
                cut = c.recv_json()
                break
            except TimeoutError:
                continue
        assert cut is not None, "the trickled half line was never cut"
        assert cut["error"]["data"]["limit"] == "idle_timeout_s" and "unfinished" in cut["error"]["message"]
        c.sock.settimeout(5)
        assert c.at_eof()


def test_the_connection_cap_refuses_with_32002(serve: Callable[..., Served]) -> None:
    s = serve("[control]\nmax_connections = 2\nadmin_reserved_connections = 0\n", readers_only=True)
    a, b = s.conn(), s.conn()
    try:
        assert a.call("echo", {"value": 1}) == 1 and b.call("echo", {"value": 1}) == 1
        with s.conn() as c:
            err = c.recv_json()["error"]
            assert err["code"] == -32002 and err["data"]["limit"] == "max_connections"
            assert c.at_eof()
        assert s.server.connections_status()["refused"] == 1
    finally:
        a.close()
        b.close()


# -- memory: what waits for readers that do not read (issue #10 items 5 and 11) ------------------


def big_call(n: int, i: int = 1) -> bytes:
    return b'{"jsonrpc":"2.0","id":%d,"method":"big","params":{"n":%d}}\n' % (i, n)


def test_replies_are_written_as_they_come_not_built_for_a_whole_read_first(serve: Callable[..., Served]) -> None:
    # The issue: one 64 KiB write of "methods\n" lines made ipcd build 8192 replies (106 MB) before
    # sending any; with a peer that never reads, it kept them. Here 1000 requests for 100 kB each
    # arrive in one read: the handler must stop at the first reply the socket cannot take (had it
    # built them all, its uid's half of max_queued_bytes would have turned most into errors).
    s = serve(readers_only=True)
    with s.conn() as stalled:
        stalled.send(b"".join(big_call(100_000, i) for i in range(1000)))
        wait_for(lambda: s.server.budget.held >= 100_000, 5, "a big reply to be waiting for the reader")
        (conn,) = s.server.live()
        assert conn.requests < 10, f"{conn.requests} replies made for a peer that reads none"
        with s.conn() as other:  # others are served meanwhile
            assert other.call("echo", {"value": 1}) == 1
        first = stalled.recv_json()  # reading again lets it go on, in order
        assert first == {"jsonrpc": "2.0", "id": 0, "result": "x" * 100_000}
        rest = [stalled.recv_json() for _ in range(999)]
        assert [r["id"] for r in rest] == list(range(1, 1000)) and all("result" in r for r in rest)
    wait_for(lambda: s.server.budget.held == 0, 5, "the budget to be given back")


def test_small_replies_go_out_in_one_write_per_read(serve: Callable[..., Served]) -> None:
    s = serve()
    with s.conn() as c:
        c.send(
            b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"echo","params":{"value":%d}}\n' % (i, i) for i in range(50))
        )
        assert [c.recv_json()["result"] for _ in range(50)] == list(range(50))
    assert FLUSH_BYTES == 65536


def test_a_uid_holds_at_most_half_of_max_queued_bytes(serve: Callable[..., Served]) -> None:
    # 4 MiB for all connections, 2 MiB for one (non-admin) uid: two readers that never read hold
    # a 700 kB reply each; a big reply that would pass the uid's half is -32002 until one reads.
    s = serve("[control]\nmax_queued_bytes = 4194304\n", readers_only=True)
    envelope = len(b'{"jsonrpc":"2.0","id":1,"result":""}\n')
    held = 700_000 + envelope
    stalled = [s.conn(), s.conn()]
    try:
        for i, c in enumerate(stalled):
            c.send(big_call(700_000))
            wait_for(lambda i=i: s.server.budget.held == held * (i + 1), 5, "the reply to wait for its reader")
        room = 2 * 1024 * 1024 - 2 * held
        with s.conn() as c:
            err = c.call("big", {"n": room - envelope + 1})  # one byte over
            assert err["code"] == -32002 and err["data"] == {"limit": "max_queued_bytes", "value": 4194304}
            assert "max_queued_bytes = 4194304" in err["message"]
            assert c.call("big", {"n": room - envelope}) == "x" * (room - envelope)  # at the edge: it fits
            assert c.call("echo", {"value": "small"}) == "small"  # small replies always go
            assert stalled[0].recv_json()["result"] == "x" * 700_000  # one reads: room again
            wait_for(lambda: s.server.budget.held == held, 5, "its bytes to be given back")
            assert c.call("big", {"n": 700_000}) == "x" * 700_000
    finally:
        for c in stalled:
            c.close()
    wait_for(lambda: s.server.budget.held == 0, 5, "the budget to be given back")


def test_unfinished_request_lines_count_in_the_budget_too(serve: Callable[..., Served]) -> None:
    # The issue: 4 x 64 connections could each hold a 1 MiB half-line (264 MiB with the admins' slots).
    s = serve("[control]\nmax_queued_bytes = 4194304\n", readers_only=True)
    half = b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":"' + b"h" * 700_000
    held = [s.conn(), s.conn()]
    try:
        for i, c in enumerate(held):
            c.send(half)
            wait_for(lambda i=i: s.server.budget.held == len(half) * (i + 1), 5, "the half line to be counted")
        with s.conn() as c:
            c.send(half)  # 2.1 MB for the uid: past its half of 4 MiB
            err = c.recv_json()["error"]
            assert err["code"] == -32002 and err["data"]["limit"] == "max_queued_bytes"
            assert "unfinished request line" in err["message"]
            assert c.at_eof()
        held[0].send(b'"}}\n')  # finished: answered, and no longer held
        assert held[0].recv_json()["result"] == "h" * 700_000
        wait_for(lambda: s.server.budget.held == len(half), 5, "the finished line to be given back")
    finally:
        for c in held:
            c.close()
    wait_for(lambda: s.server.budget.held == 0, 5, "the budget to be given back")


def test_large_requests_are_handled_a_few_bytes_at_a_time(serve: Callable[..., Served]) -> None:
    # The issue: 1 MiB lines of `[{},{},...]` become 25 times their size as Python objects, one
    # per connection at once. Here 200 kB of large requests at a time, 100 kB for one uid: the
    # second 70 kB request of the same uid waits for the first, small ones go on.
    s = serve("[control]\nmax_inflight_request_bytes = 200000\n", readers_only=True)
    pad = "p" * 70_000
    RELEASE.clear()
    try:
        with s.conn() as a, s.conn() as b, s.conn() as c:
            a.send_json({"jsonrpc": "2.0", "id": 1, "method": "hold", "params": {"pad": pad}})
            wait_for(lambda: s.server.gate.busy > 70_000, 5, "the first large request to be handled")
            b.send_json({"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {"value": pad}})
            wait_for(lambda: s.server.gate.waited == 1, 5, "the second one to wait")
            assert c.call("echo", {"value": "p" * 4000}) == "p" * 4000  # not a large request: never waits
            RELEASE.set()
            assert a.recv_json()["result"] is True
            assert b.recv_json()["result"] == pad
    finally:
        RELEASE.set()
    assert s.server.gate.busy == 0


class Stalled:
    """One end of a socketpair that nobody reads: an outbox's connection."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.outbox: Outbox | None = None

    def send(self, data: bytes) -> None:
        self.ours.sendall(data)

    def try_send(self, data: bytes) -> int:
        return 0  # never free at once: every line goes through the queue, which these tests are about

    def finish_send(self, rest: bytes | None) -> None:
        raise AssertionError("nothing was begun by try_send")

    def abort(self) -> None:
        try:
            self.ours.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in send
        except OSError:
            pass

    def stream_closed(self, stream: Any) -> None:
        pass

    def close(self) -> None:
        self.abort()
        if self.outbox is not None:
            self.outbox.join(5)
        self.ours.close()
        self.theirs.close()


def test_the_queue_budget_bounds_each_uid_and_all_together_at_the_edge() -> None:
    """A non-admin uid holds at most half of max_queued_bytes, all together at most all of it; an admin is
    counted, never refused; a uid that holds nothing is bounded by the total only (a long line still goes)."""
    budget = QueueBudget(lambda: 1000)
    assert budget.take(1, 500) and not budget.take(1, 1)  # a uid's half, exactly
    assert budget.take(2, 499) and budget.take(3, 1)  # the total, exactly
    assert not budget.take(3, 1) and not budget.take(4, 1)  # past it, for every uid
    assert budget.refused == 3
    assert budget.take(None, 10) and budget.held == 1010
    budget.give(2, 499)
    assert budget.take(4, 489) and not budget.take(5, 1)  # 500 + 1 + 10 + 489: the total again
    budget.give(1, 500)
    budget.give(4, 489)
    assert budget.take(6, 989) and not budget.take(6, 1)  # held nothing: up to the total (11 held), once
    assert budget.refused == 5


def test_status_counts_queue_refusals_and_large_requests_that_waited(serve: Callable[..., Served]) -> None:
    s = serve()
    budget, gate = s.server.budget, s.server.gate
    limit = s.server.app.config.control.max_inflight_request_bytes
    assert not budget.take(1000, s.server.app.config.control.max_queued_bytes + 1)  # past the total
    held, entered = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.enter(1000, limit):
            held.set()
            entered.wait(10)

    def waiter() -> None:
        with gate.enter(1001, 1):
            pass

    first = threading.Thread(target=hold)
    first.start()
    held.wait(10)
    second = threading.Thread(target=waiter)
    second.start()
    wait_for(lambda: s.server.connections_status()["large_requests_waited"] == 1, 5, "the second request to wait")
    entered.set()
    first.join(10)
    second.join(10)
    assert not second.is_alive() and gate.busy == 0
    st = s.server.connections_status()
    assert (st["queue_refused"], st["large_requests_waited"]) == (1, 1)


def test_an_outbox_counts_what_it_is_writing_and_its_uids_share_of_the_budget() -> None:
    # The issue: a subscriber that never read held 620 MB of 1 MiB publishes. The queue's bound
    # counts the lines the pump is writing too, and the budget bounds all of one uid's outboxes.
    budget = QueueBudget(lambda: 2 << 20)  # 1 MiB for one uid
    line = b"y" * 99_999 + b"\n"
    peers = [Stalled() for _ in range(4)]
    try:
        boxes = [Outbox(p, 1024, 400_000, budget, uid=1000) for p in peers[:3]]
        for p, box in zip(peers, boxes, strict=False):
            p.outbox = box
        for box in boxes:
            assert box.push("s", line)  # an empty queue always takes a line
        wait_for(lambda: all(box.queued == 0 for box in boxes), 5, "the pumps to be writing")
        assert [box.queued_bytes for box in boxes] == [100_000] * 3  # still counted while being written
        taken = [sum(box.push("s", line) for _ in range(10)) for box in boxes]
        assert taken == [3, 3, 1]  # 400 kB per queue; then 1 MiB (1,048,576 bytes) for the uid
        assert budget.held == sum(box.queued_bytes for box in boxes) == budget.held_by(1000) == 1_000_000
        assert not boxes[2].push("s", line) and boxes[2].dropped == 10
        admin = peers[3].outbox = Outbox(peers[3], 1024, 400_000, budget, uid=None)
        assert sum(admin.push("s", line) for _ in range(10)) == 4  # an admin is counted, not refused
        assert budget.held == 1_400_000
        admin.close()
        for box in boxes:
            box.close()
        assert budget.held == 0
    finally:
        for p in peers:
            p.close()


def test_a_follower_refused_by_the_budget_is_called_back_when_someone_reads() -> None:
    budget = QueueBudget(lambda: 2 << 20)
    line = b"y" * 99_999 + b"\n"
    hog, follower = Stalled(), Stalled()
    try:
        hog.outbox = Outbox(hog, 1024, 8 << 20, budget, uid=1000)
        while hog.outbox.push("s", line):  # the uid's half: 1 MiB
            pass
        follower.outbox = Outbox(follower, 1024, 8 << 20, budget, uid=1000)
        room = threading.Event()
        assert not follower.outbox.offer("logs.follow", line, room.set)  # its queue is empty, the budget is not
        assert not room.is_set()
        hog.outbox.close()  # its reader went away: its bytes are given back
        assert room.is_set()
        assert follower.outbox.offer("logs.follow", line, room.set)
    finally:
        hog.close()
        follower.close()


class Reader(ClientConnection):
    """A real connection on one end of a socketpair, with an outbox; the test reads the other end.

    `pumped` keeps what the pump wrote (`send`, and `finish_send` for the
    rest of a line begun at once); what `try_send` wrote from the thread
    that pushed it is not in it.  The pump's writes wait for `gate`.
    """

    def __init__(self, sndbuf: int | None = None) -> None:
        ours, self.theirs = socket.socketpair()
        if sndbuf is not None:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.theirs.settimeout(10.0)
        super().__init__(ours, Peer(os.getpid(), os.getuid(), os.getgid(), role="admin"), None)  # type: ignore[arg-type]
        self.pumped: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()

    def send(self, data: bytes) -> None:
        if threading.current_thread().name == "ipcd-outbox":
            assert self.gate.wait(10)
            self.pumped.append(data)
        super().send(data)

    def finish_send(self, rest: bytes | None) -> None:
        assert self.gate.wait(10)
        if rest:
            self.pumped.append(rest)
        super().finish_send(rest)

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.theirs.recv(n - len(data))
            assert chunk, f"EOF after {len(data)} of {n} bytes"
            data += chunk
        return data

    def nothing_yet(self) -> bool:
        self.theirs.setblocking(False)
        try:
            self.theirs.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        finally:
            self.theirs.settimeout(10.0)
        return False

    def close(self) -> None:
        self.gate.set()
        super().close()
        self.theirs.close()


def test_a_notification_the_socket_takes_at_once_is_written_by_whoever_pushes_it() -> None:
    r = Reader()
    try:
        box = r.outbox = Outbox(r, 1024, 1 << 20, QueueBudget(lambda: 2 << 20), uid=1000)
        lines = [b'{"jsonrpc":"2.0","method":"message","params":{"n":%d}}\n' % i for i in range(100)]
        for line in lines:
            assert box.push("s", line)
            assert box.queued_bytes == 0  # in the socket already: nothing queued, nothing for the pump
        assert box.sent == 100
        assert r.read(sum(map(len, lines))) == b"".join(lines)
        assert r.pumped == []
    finally:
        r.close()


def test_what_the_socket_does_not_take_at_once_follows_from_the_queue_in_order() -> None:
    r = Reader(sndbuf=4096)
    budget = QueueBudget(lambda: 2 << 20)
    try:
        box = r.outbox = Outbox(r, 1024, 1 << 20, budget, uid=1000)
        big = b"a" * (SMALL_BYTES - 1) + b"\n"  # the largest line that may go straight to the socket
        small = b"b" * 99 + b"\n"
        assert box.push("s", big)
        rest = box.queued_bytes
        assert 0 < rest < len(big)  # part of it in the socket, the rest queued for the pump, counted
        assert box.push("s", small)  # behind the rest, never before it
        assert budget.held_by(1000) == rest + len(small)
        assert r.read(len(big) + len(small)) == big + small
        wait_for(lambda: box.sent == 2 and budget.held == 0, 5, "the pump to finish and give the bytes back")
        assert b"".join(r.pumped) == big[-rest:] + small
    finally:
        r.close()


def test_a_reply_never_lands_in_a_notification_the_socket_took_only_part_of() -> None:
    r = Reader(sndbuf=4096)
    try:
        box = r.outbox = Outbox(r, 1024, 1 << 20)
        note = b'{"jsonrpc":"2.0","method":"message","params":"' + b"m" * 60_000 + b'"}\n'
        reply = b'{"jsonrpc":"2.0","id":1,"result":{"pong":true}}\n'
        r.gate.clear()  # the pump may not write the rest of the note yet
        assert box.push("s", note)
        assert 0 < box.queued_bytes < len(note)  # part of it is in the socket
        box.hold()  # the connection's handler makes a reply and writes it, as `_answer` does
        handler = threading.Thread(target=r.send, args=(reply,))
        handler.start()
        r.gate.set()
        assert r.read(len(note) + len(reply)) == note + reply  # the rest first, then the reply
        handler.join(10)
        box.release()
    finally:
        r.close()


def test_a_line_waits_for_the_pump_while_it_writes_or_holds_lines_ahead_of_it() -> None:
    r = Reader()
    try:
        box = r.outbox = Outbox(r, 1024, 1 << 20)
        a, b, c = b'{"n":"a"}\n', b'{"n":"b"}\n', b'{"n":"c"}\n'
        r.gate.clear()
        box.hold()
        assert box.push("s", a)  # held: queued
        box.release()
        wait_for(lambda: box.queued == 0, 5, "the pump to take it")  # and wait at the gate to write it
        assert box.queued_bytes == len(a)
        assert box.push("s", b)  # the socket has room, but `a` is being written: b waits behind it
        assert box.push("s", c)  # and c behind b
        assert r.nothing_yet() and box.queued == 2
        r.gate.set()
        assert r.read(len(a + b + c)) == a + b + c
        wait_for(lambda: box.sent == 3, 5, "the pump to count them")
        assert b"".join(r.pumped) == a + b + c
    finally:
        r.gate.set()
        r.close()


def test_a_line_waits_for_the_pump_while_a_reply_is_made_or_past_small_bytes() -> None:
    r = Reader()
    try:
        box = r.outbox = Outbox(r, 1024, 1 << 20)
        line = b'{"n":1}\n'
        box.hold()  # a reply is being made: a notification must not go before it
        assert box.push("s", line)
        assert r.nothing_yet() and box.queued == 1
        box.release()
        assert r.read(len(line)) == line
        wait_for(lambda: r.pumped == [line], 5, "the pump to have written it")
        large = b"c" * SMALL_BYTES + b"\n"
        assert box.push("s", large)  # over SMALL_BYTES: the queue's, as before
        assert r.read(len(large)) == large
        wait_for(lambda: r.pumped == [line, large], 5, "the pump to have written the large line")
    finally:
        r.close()


# -- against a real ipcd over its real socket -----------------------------------------------------


def test_unknown_method_and_bad_params(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        err = c.call("nope")
        assert err["code"] == -32601
        err = c.call("ping", {"bogus": 1})
        assert err["code"] == -32602 and err["data"]["param"] == "bogus"
        err = c.call("status", [1, 2])
        assert err["code"] == -32602
        assert c.call("ping")["pong"]  # the connection lives on


def test_notification_gets_no_reply(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send_json({"jsonrpc": "2.0", "method": "ping"})
        c.send_json({"jsonrpc": "2.0", "method": "no.such"})  # errors of notifications: silent too
        c.send_json({"jsonrpc": "2.0", "id": "after", "method": "ping"})
        assert c.recv_json()["id"] == "after"


def test_batch(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send_json(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                {"jsonrpc": "2.0", "method": "ping"},
                {"jsonrpc": "2.0", "id": 2, "method": "nope"},
                7,
            ]
        )
        replies = c.recv_json()
        assert isinstance(replies, list) and len(replies) == 3
        assert replies[0]["id"] == 1 and replies[0]["result"]["pong"]
        assert replies[1]["id"] == 2 and replies[1]["error"]["code"] == -32601
        assert replies[2]["id"] is None and replies[2]["error"]["code"] == -32600
        # A batch of notifications only: no reply at all.
        c.send_json([{"jsonrpc": "2.0", "method": "ping"}, {"jsonrpc": "2.0", "method": "ping"}])
        c.send_json({"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert c.recv_json()["id"] == 3
        c.send(b"[]\n")
        assert c.recv_json()["error"]["code"] == -32600


def test_parse_error_has_null_id_and_connection_survives(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send(b'{"jsonrpc": "2.0", "id": 5, "method": \n')
        reply = c.recv_json()
        assert reply == {"jsonrpc": "2.0", "id": None, "error": reply["error"]}
        assert reply["error"]["code"] == -32700
        c.send(b"\xff\xfe{}\n")
        assert c.recv_json()["error"]["code"] == -32700
        assert c.call("ping")["pong"]


def test_pipelined_requests_answered_in_order(ipcd: Ipcd) -> None:
    n = 500
    with ipcd.conn() as c:
        c.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}).encode() + b"\n" for i in range(n)))
        ids = [c.recv_json()["id"] for _ in range(n)]
    assert ids == list(range(n))


@needs_program("socat")
def test_plain_command_over_socat(ipcd: Ipcd) -> None:
    out = subprocess.run(
        ["socat", "-t", "5", "-", f"UNIX-CONNECT:{ipcd.sock}"],
        input=b"ping\nstatus\nno.such thing\n",
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in lines] == [None, None, None]
    assert lines[0]["result"]["pong"] is True
    assert lines[1]["result"]["pid"] == ipcd.proc.pid
    assert lines[2]["error"]["code"] == -32601


def test_plain_command_positional_params_are_checked(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        c.send(b"ping extra\n")
        assert c.recv_json()["error"]["code"] == -32602
        c.send(b'ping "unterminated\n')
        assert c.recv_json()["error"]["code"] == -32700


def test_fifty_clients_times_hundred_requests(ipcd: Ipcd) -> None:
    clients, per_client = 50, 100
    before = ipcd.call("status")["requests"]["total"]
    barrier = threading.Barrier(clients)
    failures: list[str] = []

    def worker(k: int) -> None:
        try:
            with ipcd.conn(30.0) as c:
                barrier.wait(30)
                for i in range(per_client):
                    rid = f"{k}-{i}"
                    c.send_json({"jsonrpc": "2.0", "id": rid, "method": "ping"})
                    reply = c.recv_json()
                    if reply.get("id") != rid or not reply["result"]["pong"]:
                        failures.append(f"{rid}: {reply}")
                        return
        except Exception as e:  # collected, asserted below
            failures.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    after = ipcd.call("status")
    assert after["requests"]["total"] - before >= clients * per_client
    assert after["connections"]["total"] >= clients


def test_bad_clients_do_not_disturb_others(ipcd: Ipcd) -> None:
    rng = random.Random(1)
    good = ipcd.conn()
    bad = []
    # Garbage, half a line, a vanishing peer, a reset.
    g = ipcd.conn()
    g.send(bytes(rng.randrange(256) for _ in range(4096)).replace(b"\n", b"") + b"\n")
    bad.append(g)
    h = ipcd.conn()
    h.send(b'{"jsonrpc":"2.0","id":1,"meth')
    bad.append(h)
    v = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    v.connect(ipcd.sock)
    v.close()
    r = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    r.connect(ipcd.sock)
    r.sendall(b'{"jsonrpc":"2.0","id":1,"method":"status"}\n' * 100)
    r.close()  # gone before reading its replies
    try:
        for _ in range(50):
            assert good.call("ping")["pong"]
        # The garbage got parse errors, and its connection still works.
        assert g.recv_json()["error"]["code"] in (-32700, -32601)
        assert g.call("ping")["pong"]
    finally:
        good.close()
        for c in bad:
            c.close()
    assert ipcd.call("ping")["pong"]


def test_unicode_round_trip_and_ids_of_every_kind(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        for rid in ("ünïcødé ✓", 0, -5, 2.5, None):
            c.send_json({"jsonrpc": "2.0", "id": rid, "method": "ping"})
            assert c.recv_json()["id"] == rid


def test_connection_limit_counts_in_status(make_ipcd) -> None:
    # No slots reserved for admins: the suite may run as root, an admin.
    d: Ipcd = make_ipcd("[control]\nmax_connections = 2\nadmin_reserved_connections = 0\n").start()
    with d.conn() as a:
        wait_only_connection(a, "the readiness check's connection to be gone")
        with d.conn() as b:
            assert b.call("ping")["pong"]
            with Conn(d.sock) as c:
                err = c.recv_json()
                assert err["error"]["code"] == -32002 and err["error"]["data"]["limit"] == "max_connections"
                assert c.at_eof()
            assert a.call("status")["connections"]["refused"] == 1
        wait_only_connection(a, "b's connection to be gone")
        with d.conn() as again:  # b's place is free again
            assert again.call("status")["connections"]["active"] == 2


# -- limits against a real ipcd, each at its edge -------------------------------------------------


def _padded_request(total: int) -> bytes:
    head = b'{"jsonrpc":"2.0","id":1,"method":"ping"'
    return head + b" " * (total - len(head) - 1) + b"}"


def test_request_line_limit_at_edge(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nmax_request_bytes = 1024\n").start()
    with d.conn() as c:
        line = _padded_request(1024)
        assert len(line) == 1024
        c.send(line + b"\n")
        assert c.recv_json()["result"]["pong"]
    with d.conn() as c:
        c.send(_padded_request(1025) + b"\n")
        err = c.recv_json()["error"]
        assert err["code"] == -32002 and err["data"]["limit"] == "max_request_bytes"
        assert c.at_eof()
    with d.conn() as c:  # no newline at all: cut off as soon as it is over
        c.send(b"x" * 1025)
        assert c.recv_json()["error"]["code"] == -32002
        assert c.at_eof()
    assert d.call("ping")["pong"]


def test_idle_timeout(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nidle_timeout_s = 0.3\n").start()
    with d.conn() as quiet, d.conn() as busy:
        t0 = time.monotonic()
        deadline = t0 + 1.0
        while time.monotonic() < deadline:  # keeps talking for longer than the timeout
            assert busy.call("ping")["pong"]
        err = quiet.recv_json()["error"]
        assert err["code"] == -32002 and err["data"]["limit"] == "idle_timeout_s"
        assert quiet.at_eof()
        assert busy.call("ping")["pong"]


def test_a_connection_with_a_stream_open_may_stay_silent_past_the_idle_timeout(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nidle_timeout_s = 0.3\n").start()
    with d.conn() as watcher:
        assert watcher.call("kv.watch", {"prefix": "w/"}) == {"watching": "w/"}
        with d.conn() as quiet:  # silent since after the watcher's last word: cut after it would be
            assert quiet.recv_json()["error"]["data"]["limit"] == "idle_timeout_s"
            assert quiet.at_eof()
        d.call("kv.set", {"key": "w/x", "value": 1})
        assert watcher.recv_json()["params"]["key"] == "w/x"  # still open, still told
        assert watcher.call("ping")["pong"]


def test_half_line_counts_as_idle(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nidle_timeout_s = 0.2\n").start()
    with d.conn() as c:
        c.send(b'{"jsonrpc":"2.0",')
        assert c.recv_json()["error"]["data"]["limit"] == "idle_timeout_s"
        assert c.at_eof()


def test_connection_limit_at_edge(make_ipcd) -> None:
    # No slots reserved for admins: the suite may run as root, an admin.
    d: Ipcd = make_ipcd("[control]\nmax_connections = 3\nadmin_reserved_connections = 0\n").start()
    held = [d.conn()]
    try:
        wait_only_connection(held[0], "the readiness check's connection to be gone")
        held += [d.conn(), d.conn()]
        for c in held:
            assert c.call("ping")["pong"]  # exactly max_connections are served
        with Conn(d.sock) as extra:
            err = extra.recv_json()["error"]
            assert err["code"] == -32002 and err["data"]["limit"] == "max_connections"
            assert extra.at_eof()
        held.pop().close()
        wait_for(lambda: held[0].call("status")["connections"]["active"] == 2, 10, "a slot to free up")
        with Conn(d.sock) as again:
            assert again.call("ping")["pong"]
    finally:
        for c in held:
            c.close()
