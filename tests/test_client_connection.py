"""`ipcd.client.connection`: `Client`, its calls and streams, against a real ipcd."""

from __future__ import annotations

import os

import pytest
from conftest import Ipcd, wait_for

from ipcd import client
from ipcd.client import Client, Conflict, InvalidParams, LimitReached, MethodNotFound, NotFound, RemoteError


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
