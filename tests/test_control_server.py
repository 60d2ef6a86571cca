"""`ipcd.control.server` in this process: a real socket, a test-only registry.

No daemon, no store: a `ControlServer` serves methods declared here, so
what the server itself promises (errors, limits, streams, order) is tested
in milliseconds.  What needs a process (signals, systemd, exit codes) is
tested against real daemons elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Conn, wait_for

from ipcd.config import Config, parse
from ipcd.control.access import Policy, make_policy
from ipcd.control.app import App, Call
from ipcd.control.registry import Param, Registry
from ipcd.control.server import ControlServer

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


@TEST.method("ticks", role="read", stream=True, doc="A stream of n ticks.", params=(Param("n", "integer"),))
def ticks(call: Call, n: int) -> Any:
    stream = call.conn.open_stream("ticks")
    for i in range(n):
        stream.push("tick", {"i": i})
    return {"streaming": n}


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
