"""`ipcd.client`, the library ipcctl and other programs use, against a real ipcd."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Ipcd, wait_for

from ipcd import client
from ipcd.client import (
    Client,
    Conflict,
    InvalidParams,
    LimitReached,
    LogHandler,
    MethodNotFound,
    NotFound,
    RemoteError,
    Unreachable,
)


def test_finds_the_socket_as_ipcctl_does(ipcd: Ipcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPCD_SOCKET", ipcd.sock)
    with Client() as c:
        assert c.path == ipcd.sock
        assert c.status()["pid"] == ipcd.proc.pid
    monkeypatch.delenv("IPCD_SOCKET")
    monkeypatch.setenv("IPCD_RUNTIME_DIR", str(ipcd.run_dir))
    with Client() as c:
        assert c.ping()["pong"] is True


def test_unreachable_names_the_socket(short_tmp: Path) -> None:
    path = str(short_tmp / "none.sock")
    c = Client(path)
    with pytest.raises(Unreachable) as e:
        c.status()
    assert path in str(e.value) and "is ipcd running?" in str(e.value)
    c.close()


def test_errors_carry_the_json_rpc_code(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[kv]\nmax_value_bytes = 64\n").start()
    with Client(d.sock) as c:
        with pytest.raises(NotFound) as nf:
            c.kv_get("missing")
        assert (nf.value.code, nf.value.data) == (-32003, {"key": "missing"})
        assert "missing" in nf.value.message and "-32003" in str(nf.value)
        with pytest.raises(NotFound):
            c.kv_delete("missing")
        c.kv_set("k", 1)
        with pytest.raises(Conflict) as cf:
            c.kv_set("k", 2, if_version=7)
        assert (cf.value.code, cf.value.data) == (-32004, {"key": "k", "version": 1, "if_version": 7})
        with pytest.raises(LimitReached) as lr:
            c.kv_set("k", "x" * 100)
        assert lr.value.code == -32002 and lr.value.data["limit"] == "max_value_bytes"
        with pytest.raises(InvalidParams) as ip:
            c.kv_set("", 1)
        assert ip.value.code == -32602 and ip.value.data == {"param": "key"}
        with pytest.raises(RemoteError) as other:
            c.call("no.such.method")
        assert type(other.value) is MethodNotFound and other.value.code == -32601
        assert str(other.value) == f"{other.value.message} (-32601)"
        assert c.kv_get("k")["value"] == 1  # the connection lives on after each


def test_kv_calls(ipcd: Ipcd) -> None:
    with Client(ipcd.sock) as c:
        r = c.kv_set("cfg/a", {"on": True})
        assert r == {"key": "cfg/a", "version": 1, "expires_at": None}
        assert c.kv_set("cfg/b", [1, 2], ttl_s=60)["expires_at"] is not None
        got = c.kv_get("cfg/a")
        assert got["value"] == {"on": True} and got["version"] == 1
        assert got["set_by"]["pid"] == os.getpid()
        assert c.kv_set("cfg/a", "v2", if_version=1)["version"] == 2
        assert c.kv_list("cfg/") == ["cfg/a", "cfg/b"] and c.kv_list() == ["cfg/a", "cfg/b"]
        assert c.kv_update("n", lambda v: v + 1, default=41)["version"] == 1
        assert c.kv_update("n", lambda v: v * 2)["version"] == 2
        assert c.kv_get("n")["value"] == 84
        with Client(ipcd.sock) as rival:

            def meddle(v: int) -> int:  # another writer comes between every read and write
                rival.kv_set("n", 0)
                return v + 1

            with pytest.raises(Conflict):
                c.kv_update("n", meddle, max_tries=3)
            got = c.kv_get("n")
            assert (got["value"], got["version"]) == (0, 5)  # 2 before, then the rival's 3
        assert c.kv_delete("cfg/a") is None
        assert c.kv_list("cfg/") == ["cfg/b"]


def test_subscribe_iterator_unsubscribe_and_calls_meanwhile(ipcd: Ipcd) -> None:
    with Client(ipcd.sock) as sub, Client(ipcd.sock) as pub:
        messages = sub.subscribe("a")  # one name, or several
        assert messages.result == {"channels": ["a"]}
        assert sub.subscribe(["b"]) is messages and messages.channels == {"a", "b"}
        assert pub.publish("a", {"n": 1}) == 1
        # A call on the subscribed connection: the message that comes first is kept.
        assert sub.publish("b", "from myself") == 1
        msg = next(messages)
        assert (msg["channel"], msg["message"], msg["pid"], msg["uid"]) == ("a", {"n": 1}, os.getpid(), os.getuid())
        assert set(msg) == {"channel", "message", "published_at", "uid", "pid"}
        assert next(messages)["message"] == "from myself"
        # Messages already on their way from a channel we leave are not yielded.
        for i in range(3):
            assert pub.publish("a", i) == 1
        assert sub.unsubscribe("a") == ["a"]
        assert pub.publish("a", "late") == 0
        assert pub.publish("b", "after") == 1
        assert next(messages)["message"] == "after"
        assert messages.unsubscribe() == ["b"]
        assert list(messages) == []  # nothing left to listen to: the iteration ends
        assert sub.ping()["pong"]


def test_stream_timeout_leaves_the_stream_usable(ipcd: Ipcd) -> None:
    with Client(ipcd.sock) as sub, Client(ipcd.sock) as pub:
        messages = sub.subscribe(["t"], timeout_s=0.05)
        with pytest.raises(TimeoutError):
            next(messages)
        pub.publish("t", "later")
        messages.timeout_s = 10
        assert next(messages)["message"] == "later"


def test_a_slow_iterator_gets_the_lagged_marker(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nstream_queue = 4\n").start()
    n = 300
    with Client(d.sock) as sub, Client(d.sock) as pub:
        messages = sub.subscribe(["load"])
        for i in range(n):  # 1.2 MB: far more than the socket buffer holds
            pub.publish("load", {"i": i, "pad": "x" * 4096})
        # The subscriber falls behind once its socket buffer is full, and may
        # before: on a busy machine ipcd's writer thread can lag the publisher
        # by more than the 4 it queues.  Each time, one marker comes in the
        # place of what it missed.
        got, lagged, due = 0, 0, 0
        while due < n:
            m = next(messages)
            if m.get("lagged"):
                assert m["stream"] == "subscribe" and m["missed"] > 0, m
                lagged += 1
                due += m["missed"]
            else:
                assert m["message"]["i"] == due, f"message {m['message']['i']} where {due} was due"
                got += 1
                due += 1
    assert due == n and lagged >= 1 and 0 < got < n


def test_kv_watch_iterator(ipcd: Ipcd) -> None:
    with Client(ipcd.sock) as w, Client(ipcd.sock) as c:
        changes = w.kv_watch("job/", timeout_s=10)
        assert changes.result == {"watching": "job/"}
        c.kv_set("job/1", "queued")
        c.kv_set("elsewhere", 1)
        c.kv_delete("job/1")
        c.kv_set("job/2", "brief", ttl_s=0.05)
        assert next(changes) == {"key": "job/1", "op": "set", "value": "queued", "version": 1}
        assert next(changes) == {"key": "job/1", "op": "delete", "value": None, "version": 1}
        assert next(changes)["op"] == "set"
        assert next(changes) == {"key": "job/2", "op": "expire", "value": None, "version": 1}  # by the purge


def test_streams_share_a_connection(ipcd: Ipcd) -> None:
    with Client(ipcd.sock) as c, Client(ipcd.sock) as other:
        changes = c.kv_watch("k")
        messages = c.subscribe(["m"])
        other.publish("m", 1)
        other.kv_set("k", "a")
        other.publish("m", 2)
        other.kv_set("k", "b")
        assert next(changes)["value"] == "a"  # the message before it waits for its own stream
        assert [next(messages)["message"], next(messages)["message"]] == [1, 2]
        assert next(changes)["value"] == "b"


def test_logs_query_and_follow(ipcd: Ipcd) -> None:
    for i in range(3):
        client.send_datagram(f"<14>clienttest: line {i}".encode(), ipcd.log_sock)
    with Client(ipcd.sock) as c:
        wait_for(lambda: len(c.logs(ident="clienttest")) == 3, 5, "three entries stored")
        entries = c.logs(ident="clienttest", limit=2)
        assert [e["message"] for e in entries] == ["line 1", "line 2"]
        assert entries[0]["sender_pid"] == os.getpid()
        follow = c.logs(follow=True, ident="clienttest", backlog=1, timeout_s=10)
        assert follow.result == {"following": True, "backlog": 1}
        assert next(follow)["message"] == "line 2"
        client.send_datagram(b"<14>clienttest: line 3", ipcd.log_sock)
        client.send_datagram(b"<14>someoneelse: not this", ipcd.log_sock)
        client.send_datagram(b"<14>clienttest: line 4", ipcd.log_sock)
        assert [next(follow)["message"], next(follow)["message"]] == ["line 3", "line 4"]
        with pytest.raises(InvalidParams):
            c.logs(bogus=1)


def test_log_handler_sends_records_with_their_extra_fields(ipcd: Ipcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPCD_SOCKET", ipcd.sock)
    handler = LogHandler(ident="handlertest")  # log.sock beside the control socket
    assert handler.path == ipcd.log_sock
    logger = logging.getLogger("tests.handler")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.warning("disk %s%% full", 91, extra={"job": "backup", "attempt": 2, "path": Path("/srv")})
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("it broke")
        logger.debug("details", extra={"nested": {"a": [1, None]}})
    finally:
        logger.removeHandler(handler)
        handler.close()
    with Client(ipcd.sock) as c:
        wait_for(lambda: len(c.logs(ident="handlertest")) == 3, 5, "the 3 records to be stored")
        entries = c.logs(ident="handlertest")
    warn, err, debug = entries
    assert (warn["message"], warn["priority"], warn["format"]) == ("disk 91% full", 4, "json")
    assert warn["fields"] == {"logger": "tests.handler", "job": "backup", "attempt": 2, "path": "/srv"}
    assert warn["pid"] == os.getpid() and warn["sender_pid"] == os.getpid()  # claimed and trusted
    assert err["priority"] == 3 and "Traceback" in err["message"] and "ZeroDivisionError" in err["message"]
    assert debug["priority"] == 7 and debug["fields"]["nested"] == {"a": [1, None]}


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_log_handler_never_raises_without_a_daemon(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("IPCD_SOCKET", "IPCD_RUNTIME_DIR", "IPCD_LOG_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))  # no daemon anywhere we look
    if os.path.exists("/run/ipcd/ipcd.sock"):
        pytest.skip("a system ipcd runs here")
    handler = LogHandler(ident="nodaemon")  # does not raise
    assert handler.path is None
    logger = _logger("tests.nodaemon", handler)
    for i in range(3):
        logger.error("lost %d", i)  # does not raise
    assert handler.dropped == 3
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 1  # the first of the run, not one per record
    handler.close()
    handler.close()  # twice, as logging.shutdown may: no error
    logging.shutdown([lambda: handler])  # type: ignore[list-item]


def test_log_handler_recovers_when_the_daemon_comes(make_ipcd, capsys: pytest.CaptureFixture[str]) -> None:
    d: Ipcd = make_ipcd()
    handler = LogHandler(d.log_sock, ident="late")
    logger = _logger("tests.late", handler)
    logger.warning("before")  # no daemon yet: dropped, reported once
    assert handler.dropped == 1 and "--- Logging error ---" in capsys.readouterr().err
    d.start()
    logger.warning("after")
    handler.close()
    with Client(d.sock) as c:
        wait_for(lambda: c.logs(ident="late"), 10, "the record sent once ipcd runs")
        assert [e["message"] for e in c.logs(ident="late")] == ["after"]
    assert handler.dropped == 1


def test_log_handler_loses_nothing_in_a_burst(ipcd: Ipcd) -> None:
    n = 5000
    handler = LogHandler(ipcd.log_sock, ident="burst")
    logger = _logger("tests.burst", handler)
    for i in range(n):
        logger.info("record %d", i)
    handler.close()
    assert handler.dropped == 0
    with Client(ipcd.sock) as c:
        wait_for(lambda: ipcd.call("status")["logs"]["stored"] >= n, 30, f"{n} records stored")
        got = [e["message"] for e in c.logs(ident="burst", limit=n)]
    assert got == [f"record {i}" for i in range(n)]


def test_log_handler_wait_is_bounded(short_tmp: Path) -> None:
    """A log socket nobody reads: each record waits at most timeout_s, then is counted as dropped."""
    import socket
    import time

    path = str(short_tmp / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as never_read:
        never_read.bind(path)
        handler = LogHandler(path, ident="full", timeout_s=0.05)
        logger = _logger("tests.full", handler)
        logging.raiseExceptions = False
        try:
            t0 = time.monotonic()
            while handler.dropped == 0 and time.monotonic() - t0 < 20:
                logger.info("x" * 1000)
            assert handler.dropped == 1  # the queue filled up, and the program went on
        finally:
            logging.raiseExceptions = True
            handler.close()


def test_call_many_pipelines_and_keeps_the_order(ipcd: Ipcd) -> None:
    with Client(ipcd.sock) as c:
        calls = [("kv.set", {"key": f"k{i}", "value": i}) for i in range(300)]
        assert [r["version"] for r in c.call_many(calls)] == [1] * 300
        gets = [("kv.get", {"key": f"k{i}"}) for i in (0, 299, 7)] + [("kv.get", {"key": "missing"}), ("ping", None)]
        results = c.call_many(gets, errors=True)
        assert [r["value"] for r in results[:3]] == [0, 299, 7]
        assert isinstance(results[3], NotFound) and results[4]["pong"] is True
        with pytest.raises(NotFound):
            c.call_many(gets)  # the first error, after every reply was read
        assert c.call_many([("no.such", None), ("kv.get", {"key": "nope"})], errors=True)[0].code == -32601
        assert c.ping()["pong"] is True  # the connection is still in step
        assert c.call_many([]) == []


CLIENT_SIDE = {
    "ipcd",
    "ipcd.client",
    "ipcd.client.connection",
    "ipcd.client.errors",
    "ipcd.client.handler",
    "ipcd.client.resolve",
    "ipcd.client.trust",
    "ipcd.config",
    "ipcd.errors",
    "ipcd.wire",
    "ipcd.wire.jsonrpc",
    "ipcd.wire.priority",
}


def test_the_client_never_imports_the_server_side() -> None:
    code = "import sys, ipcd.client; print(' '.join(sorted(m for m in sys.modules if m.startswith('ipcd'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= CLIENT_SIDE, out
