"""Shared key/value state against a real ipcd: CAS, TTLs, persistence, limits, watch, roles."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from typing import Any

import pytest
from conftest import Conn, Ipcd, needs_root, reap, run_as, wait_for

from ipcd.config import KvConfig
from ipcd.errors import InternalError, InvalidParams
from ipcd.state.kv import Change, KvStore
from ipcd.state.kvdb import UPSERT, KvDb, Write


def set_(c: Conn, key: str, value: Any, **extra: Any) -> Any:
    return c.call("kv.set", {"key": key, "value": value, **extra})


def get(c: Conn, key: str) -> Any:
    return c.call("kv.get", {"key": key})


def db_keys(d: Ipcd) -> list[str]:
    """The keys in the SQLite file itself, read beside the daemon."""
    path = d.call("status")["kv"]["path"]
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return sorted(k for (k,) in db.execute("SELECT key FROM kv"))


def comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


def test_any_json_value_with_version_and_who_set_it(ipcd: Ipcd) -> None:
    values = ["text", "ünïcødé ✓", 42, -1.5, True, False, [1, "two", [3]], {"nested": {"a": [False]}}, "", [], {}]
    with ipcd.conn() as c:
        for n, value in enumerate(values, 1):
            t0 = time.time()
            assert set_(c, "k", value) == {"key": "k", "version": n, "expires_at": None}
            got = get(c, "k")
            assert got["value"] == value and type(got["value"]) is type(value)
            assert got["version"] == n and got["expires_at"] is None
            assert t0 <= got["set_at"] <= time.time()
        assert got["set_by"] == {"uid": os.getuid(), "pid": os.getpid(), "command": comm()}


def test_null_is_a_value(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        assert set_(c, "nothing", None)["version"] == 1
        assert get(c, "nothing")["value"] is None


def test_list_by_prefix_and_missing_keys(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        for k in ("app/b", "app/a", "apple", "other", "app/a/deep"):
            set_(c, k, 1)
        assert c.call("kv.list", {"prefix": "app/"}) == {"keys": ["app/a", "app/a/deep", "app/b"]}
        assert c.call("kv.list", {"prefix": "app"})["keys"] == ["app/a", "app/a/deep", "app/b", "apple"]
        assert c.call("kv.list")["keys"] == ["app/a", "app/a/deep", "app/b", "apple", "other"]
        assert c.call("kv.list", {"prefix": "zzz"}) == {"keys": []}
        assert c.call("kv.delete", {"key": "apple"}) == {"deleted": True}
        for method in ("kv.get", "kv.delete"):
            err = c.call(method, {"key": "apple"})
            assert err["code"] == -32003 and err["data"] == {"key": "apple"} and "apple" in err["message"]
        assert "apple" not in c.call("kv.list")["keys"]


def test_compare_and_set(ipcd: Ipcd) -> None:
    with ipcd.conn() as c:
        assert set_(c, "cas", "a", if_version=0)["version"] == 1  # 0: only if absent
        err = set_(c, "cas", "b", if_version=0)
        assert err["code"] == -32004 and err["data"] == {"key": "cas", "version": 1, "if_version": 0}
        assert set_(c, "cas", "b", if_version=1)["version"] == 2
        assert set_(c, "cas", "stale", if_version=1)["code"] == -32004
        assert get(c, "cas")["value"] == "b"
        # Deleted and made again, the key goes on counting: a reader that saw
        # version 2 of the old key cannot overwrite the new one by accident.
        c.call("kv.delete", {"key": "cas"})
        assert set_(c, "cas", "new")["version"] == 3
        assert set_(c, "cas", "stale", if_version=2)["code"] == -32004
        assert get(c, "cas")["value"] == "new"
        assert set_(c, "cas", "x", if_version=-1)["code"] == -32602


INCREMENTER = """
import json, sys
from ipcd.client import Client, Conflict, NotFound
conflicts = 0
with Client(sys.argv[1]) as c:
    print("ready", flush=True)
    sys.stdin.readline()  # all start together
    for _ in range(int(sys.argv[2])):
        while True:
            try:
                cur = c.kv_get("counter")
                value, version = cur["value"], cur["version"]
            except NotFound:
                value, version = 0, 0
            try:
                c.kv_set("counter", value + 1, if_version=version)
                break
            except Conflict:
                conflicts += 1
print(json.dumps({"conflicts": conflicts}))
"""


def test_compare_and_set_under_contention_loses_no_update(ipcd: Ipcd) -> None:
    procs_n, each = 8, 50
    with ipcd.conn() as watcher:
        watcher.call("kv.watch", {"prefix": "counter"})
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", INCREMENTER, ipcd.sock, str(each)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(procs_n)
        ]
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline() == "ready\n"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            outs = [p.communicate(timeout=60)[0] for p in procs]
        finally:
            reap(procs)
        assert [p.returncode for p in procs] == [0] * procs_n
        total = procs_n * each
        got = ipcd.call("kv.get", {"key": "counter"})
        assert got["value"] == total and got["version"] == total
        # Watchers see every committed change once, in order.
        changes = [watcher.recv_json()["params"] for _ in range(total)]
    assert [(ch["op"], ch["version"], ch["value"]) for ch in changes] == [("set", n, n) for n in range(1, total + 1)]
    # The writers did contend: some of their compare-and-sets were refused and retried.
    assert sum(json.loads(o)["conflicts"] for o in outs) > 0


def test_ttl_expiry_readers_watchers_and_store(ipcd: Ipcd) -> None:
    with ipcd.conn() as w, ipcd.conn() as c:
        assert w.call("kv.watch", {"prefix": "tmp/"}) == {"watching": "tmp/"}
        t0 = time.time()
        r = set_(c, "tmp/x", "soon gone", ttl_s=0.3)
        assert t0 + 0.3 <= r["expires_at"] <= time.time() + 0.3
        assert get(c, "tmp/x")["expires_at"] == r["expires_at"]
        set_(c, "tmp/keep", 1, ttl_s=0.3)
        assert set_(c, "tmp/keep", 2)["expires_at"] is None  # a set without ttl_s clears the expiry
        assert get(c, "tmp/x")["value"] == "soon gone"
        assert "tmp/x" in db_keys(ipcd)
        wait_for(lambda: time.time() > r["expires_at"], 5, "the TTL to pass")
        # Gone for readers at once, purged or not.
        assert get(c, "tmp/x")["code"] == -32003
        assert c.call("kv.list", {"prefix": "tmp/"})["keys"] == ["tmp/keep"]
        assert c.call("kv.delete", {"key": "tmp/x"})["code"] == -32003
        notes = [w.recv_json() for _ in range(4)]
        assert {n["method"] for n in notes} == {"kv.change"}
        assert [(n["params"]["op"], n["params"]["key"], n["params"]["version"]) for n in notes] == [
            ("set", "tmp/x", 1),
            ("set", "tmp/keep", 1),
            ("set", "tmp/keep", 2),
            ("expire", "tmp/x", 1),
        ]
        # Purged from the SQLite file too.
        wait_for(lambda: db_keys(ipcd) == ["tmp/keep"], 5, "the expired key to leave the store")
        assert c.call("status")["kv"]["expired"] == 1
        assert set_(c, "tmp/x", "again")["version"] == 2  # versions go on after expiry too
    for bad in (0, -1, "10"):
        assert ipcd.call("kv.set", {"key": "k", "value": 1, "ttl_s": bad})["code"] == -32602


def test_state_survives_graceful_restart(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    with d.conn() as c:
        set_(c, "a", {"x": [1, 2]})
        set_(c, "a", {"x": [1, 2, 3]})
        set_(c, "b", "lives an hour", ttl_s=3600)
        set_(c, "gone", 1)
        c.call("kv.delete", {"key": "gone"})
        before = {k: get(c, k) for k in ("a", "b")}
    assert d.stop() == 0
    d.start()
    with d.conn() as c:
        assert {k: get(c, k) for k in ("a", "b")} == before  # value, version, expiry, who and when
        assert c.call("kv.list")["keys"] == ["a", "b"]
        assert get(c, "gone")["code"] == -32003
        assert set_(c, "a", 3)["version"] == 3


def test_acknowledged_writes_survive_kill_9(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    with d.conn() as c:
        for i in range(30):
            set_(c, f"k{i:02}", i)
        c.call("kv.delete", {"key": "k00"})
        set_(c, "k29", "last")
    d.kill()  # SIGKILL right after the last acknowledgement
    d.start()
    with d.conn() as c:
        assert c.call("kv.list")["keys"] == [f"k{i:02}" for i in range(1, 30)]
        assert get(c, "k28")["value"] == 28
        assert get(c, "k29")["value"] == "last" and get(c, "k29")["version"] == 2


def test_key_edges(ipcd: Ipcd) -> None:
    good = ["x" * 256, "😀" * 256, "ключ/ü", "with space", "a:b/c.d-e_f", "{", "-"]
    bad = ["", "x" * 257, "😀" * 257, "a\nb", "tab\there", "nul\x00", "del\x7f", "bell\x07", "zw\u200bsp"]
    with ipcd.conn() as c:
        for key in good:
            assert set_(c, key, key)["version"] == 1, key
            assert get(c, key)["value"] == key
        for key in bad:
            for method, params in (
                ("kv.set", {"key": key, "value": 1}),
                ("kv.get", {"key": key}),
                ("kv.delete", {"key": key}),
            ):
                err = c.call(method, params)
                assert err["code"] == -32602 and err["data"] == {"param": "key"}, (method, key, err)
        assert c.call("kv.set", {"key": 7, "value": 1})["code"] == -32602
        assert sorted(c.call("kv.list")["keys"]) == sorted(good)


def test_value_size_limit_at_the_exact_edge(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[kv]\nmax_value_bytes = 64\n").start()
    # Measured as compact UTF-8 JSON: a string of n ASCII characters is n + 2 bytes.
    with d.conn() as c:
        assert set_(c, "s", "x" * 62)["version"] == 1
        err = set_(c, "s", "x" * 63)
        assert err["code"] == -32002 and err["data"] == {"limit": "max_value_bytes", "value": 64}
        assert set_(c, "s", "é" * 31)["version"] == 2  # 2 bytes each: 64
        assert set_(c, "s", "é" * 31 + "x")["code"] == -32002
        assert set_(c, "o", {"a": "x" * 56})["version"] == 1  # {"a":"..."} is 8 bytes + 56
        assert set_(c, "o", {"a": "x" * 57})["code"] == -32002
        assert get(c, "s")["value"] == "é" * 31 and get(c, "o")["value"] == {"a": "x" * 56}


def test_max_keys(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[kv]\nmax_keys = 3\n").start()
    with d.conn() as c:
        for k in "abc":
            set_(c, k, 1)
        err = set_(c, "d", 1)
        assert err["code"] == -32002 and err["data"]["limit"] == "max_keys"
        assert set_(c, "a", 2)["version"] == 2  # replacing is not adding
        c.call("kv.delete", {"key": "a"})
        assert set_(c, "d", 1)["version"] == 1
        assert c.call("kv.list")["keys"] == ["b", "c", "d"]


def test_watch_streams_changes_under_its_prefix(ipcd: Ipcd) -> None:
    with ipcd.conn() as w, ipcd.conn() as c:
        assert w.call("kv.watch", {"prefix": "app/"}) == {"watching": "app/"}
        assert c.call("status")["kv"]["watchers"] == 1
        set_(c, "app/a", 1)
        set_(c, "other", 1)
        set_(c, "app/a", {"two": 2})
        c.call("kv.delete", {"key": "app/a"})
        set_(c, "app/b", "end")
        notes = [w.recv_json() for _ in range(4)]
        assert notes[0] == {
            "jsonrpc": "2.0",
            "method": "kv.change",
            "params": {"key": "app/a", "op": "set", "value": 1, "version": 1},
        }
        assert [n["params"] for n in notes[1:]] == [
            {"key": "app/a", "op": "set", "value": {"two": 2}, "version": 2},
            {"key": "app/a", "op": "delete", "value": None, "version": 2},
            {"key": "app/b", "op": "set", "value": "end", "version": 1},
        ]
        assert w.call("ping")["pong"]  # the watching connection still answers calls
    wait_for(lambda: ipcd.call("status")["kv"]["watchers"] == 0, 2, "the closed watcher to go")


def test_a_watch_prefix_is_at_most_a_keys_length(ipcd: Ipcd) -> None:
    """A watch holds its prefix for as long as it lasts: 256 characters at most, as a key (a longer one matches none)."""
    longest = "😀" * 256
    with ipcd.conn() as w, ipcd.conn() as c:
        err = w.call("kv.watch", {"prefix": longest + "x"})
        assert err["code"] == -32602 and err["data"] == {"param": "prefix"}, err
        assert "at most 256 characters" in err["message"]
        assert c.call("status")["kv"]["watchers"] == 0
        assert w.call("kv.watch", {"prefix": longest}) == {"watching": longest}
        set_(c, longest, 1)
        assert w.recv_json()["params"] == {"key": longest, "op": "set", "value": 1, "version": 1}


# -- roles -------------------------------------------------------------------------


def _try_everything(sock: str) -> tuple[int, str]:
    """In a child running as another uid: each IPC method's outcome."""
    from ipcd.client import Client, RemoteError

    out: dict[str, Any] = {}
    with Client(sock) as c:
        tries = {
            "kv.get": lambda: c.kv_get("shared")["value"],
            "kv.list": lambda: c.kv_list(),
            "kv.watch": lambda: c.kv_watch("").result,
            "subscribe": lambda: c.subscribe(["ch"]).result,
            "kv.set": lambda: c.kv_set("mine", 1)["version"],
            "publish": lambda: c.publish("ch", "hi"),
            "kv.delete": lambda: c.kv_delete("mine"),
        }
        for name, fn in tries.items():
            try:
                out[name] = ["ok", fn()]
            except RemoteError as e:
                out[name] = [e.code, e.data]
    return 0, json.dumps(out)


@needs_root
def test_roles_read_and_write(make_ipcd) -> None:
    reads = {
        "kv.get": ["ok", "v"],
        "kv.list": ["ok", ["shared"]],
        "kv.watch": ["ok", {"watching": ""}],
        "subscribe": ["ok", {"channels": ["ch"]}],
    }
    refused = [-32001, {"required_role": "write"}]
    d: Ipcd = make_ipcd('[control]\nsocket_mode = "0666"\n', name="ro").start()
    d.call("kv.set", {"key": "shared", "value": "v"})
    code, out = run_as(65534, 65534, lambda: _try_everything(d.sock))
    assert code == 0, out
    assert json.loads(out) == {**reads, "kv.set": refused, "publish": refused, "kv.delete": refused}
    assert d.call("kv.list")["keys"] == ["shared"]

    w: Ipcd = make_ipcd('[control]\nsocket_mode = "0666"\n[access]\nwrite_uids = [65534]\n', name="rw").start()
    w.call("kv.set", {"key": "shared", "value": "v"})
    code, out = run_as(65534, 65534, lambda: _try_everything(w.sock))
    assert code == 0, out
    # It is its own subscriber on "ch", so its publish reaches 1.
    assert json.loads(out) == {**reads, "kv.set": ["ok", 1], "publish": ["ok", 1], "kv.delete": ["ok", None]}
    assert w.call("kv.get", {"key": "shared"})["set_by"]["uid"] == 0


def test_a_change_is_encoded_once_for_all_its_watchers(short_tmp) -> None:
    """#10 item 10: each watcher encoded the change itself: with 1024 watchers, a 1 MB set cost 1024 encodings."""
    db = KvDb(str(short_tmp / "kv.db"))
    db.start()
    try:
        kv = KvStore(db, KvConfig())
        got: list[bytes] = []
        for prefix in ("", "a", "a/", "a/b", "b"):
            for _ in range(100):
                kv.watch(prefix, got.append)
        kv.set("a/b", "x" * 100_000, None, None, 0, 1, "test")
        wait_for(lambda: len(got) == 400, 5, "every watcher under a/b")
        assert len({id(line) for line in got}) == 1  # one encoding, shared
        note = json.loads(got[0])
        assert note["method"] == "kv.change" and note["params"]["key"] == "a/b" and note["params"]["version"] == 1
    finally:
        db.close()


def test_a_kv_list_too_big_to_send_is_refused_before_it_is_built(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nmax_queued_bytes_per_connection = 65536\n").start()
    with d.conn() as c:
        c.send(b"".join(b"kv.set %s 1\n" % (b"a/%03d/" % i + b"k" * 243) for i in range(300)))
        assert all("result" in c.recv_json() for _ in range(300))
        err = c.call("kv.list", {"prefix": "a/"})  # 300 keys of 250 characters: 75 kB
        assert err["code"] == -32002 and err["data"] == {"limit": "max_queued_bytes_per_connection", "value": 65536}
        assert "list a longer prefix" in err["message"]
        assert len(c.call("kv.list", {"prefix": "a/1"})["keys"]) == 100


def _line(req_id: int | None, method: str, params: dict[str, Any]) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if req_id is not None:
        msg["id"] = req_id
    return json.dumps(msg).encode() + b"\n"


def test_pipelined_writes_share_a_commit_and_replies_keep_their_order(ipcd: Ipcd) -> None:
    """#14: the writes that follow each other in one read wait for one commit, not one each."""
    n = 200
    before = ipcd.call("status")["kv"]["commits"]
    with ipcd.conn() as c:
        sets = [_line(i, "kv.set", {"key": f"p{i % 7}", "value": i}) for i in range(n)]
        gets = [_line(n + i, "kv.get", {"key": f"p{i}"}) for i in range(7)]
        c.send(b"".join(sets + gets))  # about 16 kB: one read or a few
        replies = [c.recv_json() for _ in range(n + 7)]
    assert [r["id"] for r in replies] == list(range(n + 7))
    assert [r["result"]["version"] for r in replies[:n]] == [i // 7 + 1 for i in range(n)]
    last = {i % 7: i for i in range(n)}
    assert [r["result"]["value"] for r in replies[n:]] == [last[k] for k in range(7)]
    commits = ipcd.call("status")["kv"]["commits"] - before
    assert 1 <= commits <= 5, commits  # the 200 sets in one commit per read, not 200
    assert ipcd.call("status")["kv"]["sets"] == n


def test_a_batch_of_writes_shares_a_commit(ipcd: Ipcd) -> None:
    before = ipcd.call("status")["kv"]["commits"]
    with ipcd.conn() as c:
        c.send_json(
            [{"jsonrpc": "2.0", "id": i, "method": "kv.set", "params": {"key": f"b{i}", "value": i}} for i in range(50)]
        )
        replies = c.recv_json()
    assert [r["id"] for r in replies] == list(range(50)) and all(r["result"]["version"] == 1 for r in replies)
    assert ipcd.call("status")["kv"]["commits"] - before == 1
    assert len(ipcd.call("kv.list", {"prefix": "b"})["keys"]) == 50


def test_a_write_sent_as_a_notification_is_committed_all_the_same(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    with d.conn() as c:
        c.send(_line(None, "kv.set", {"key": "quiet", "value": 1}) + _line(None, "kv.delete", {"key": "nope"}))
        assert c.call("ping")["pong"] is True  # replies in order: the notifications were handled before it
    assert db_keys(d) == ["quiet"]  # on disk, with nobody waiting for its reply
    assert d.call("status")["requests"]["errors"] >= 1  # the delete of a missing key: counted, not answered


def test_pipelined_writes_acknowledged_survive_kill_9(make_ipcd) -> None:
    d: Ipcd = make_ipcd().start()
    with d.conn() as c:
        c.send(b"".join(_line(i, "kv.set", {"key": f"q{i:03}", "value": i}) for i in range(300)))
        assert [c.recv_json()["id"] for _ in range(300)] == list(range(300))
    d.kill()  # SIGKILL right after the last acknowledgement
    d.start()
    assert d.call("kv.list", {"prefix": "q"})["keys"] == [f"q{i:03}" for i in range(300)]


def test_acknowledged_writes_of_concurrent_clients_survive_kill_9_during_the_load(make_ipcd) -> None:
    """8 clients setting in a closed loop (each reply handed to the committing thread), SIGKILL
    in the middle: every acknowledged value is on disk (a later one, unacknowledged, may be too)."""
    d: Ipcd = make_ipcd().start()
    acked = [0] * 8
    stop = threading.Event()

    def client(i: int) -> None:
        try:
            with d.conn(5.0) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    reply = set_(c, f"c{i}", n)
                    if reply.get("version") != n:
                        return  # not acknowledged (an error): stop counting
                    acked[i] = n
        except (OSError, ValueError, AssertionError):
            pass  # the daemon was killed under us (Conn asserts a reply came before EOF)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: min(acked) >= 50 and sum(acked) >= 2000, 30, "writes from every client")
    d.kill()  # SIGKILL while the clients are still writing
    stop.set()
    for t in threads:
        t.join(10)
    last = list(acked)  # nothing more can be acknowledged now
    d.start()
    with d.conn() as c:
        stored = [get(c, f"c{i}")["value"] for i in range(8)]
    assert all(s >= a for s, a in zip(stored, last, strict=True)), (stored, last)
    assert all(s <= a + 1 for s, a in zip(stored, last, strict=True)), (stored, last)  # one in flight at most


def test_a_write_is_committed_before_the_next_call_that_is_not_a_write(ipcd: Ipcd) -> None:
    """A slow call pipelined after a write must not hold it uncommitted while others read it."""
    with ipcd.conn() as c:
        before = c.call("status")["kv"]["commits"]
        c.send(
            _line(1, "kv.set", {"key": "w", "value": 1})
            + _line(2, "kv.set", {"key": "w", "value": 2})
            + _line(3, "status", {})
        )
        set1, set2, status = (c.recv_json() for _ in range(3))
    assert [set1["result"]["version"], set2["result"]["version"]] == [1, 2]
    assert status["result"]["kv"]["commits"] == before + 1  # both sets, in one commit, before status ran


def test_one_bad_write_fails_alone_not_the_writes_sharing_its_commit(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    try:
        good = [("a", "1", 1, None, 1.0, 0, 1, "t"), ("c", "3", 1, None, 1.0, 0, 1, "t")]
        bad = ("b", '"\ud800"', 1, None, 1.0, 0, 1, "t")  # SQLite refuses a lone surrogate
        undone: list[str] = []
        told: list[str] = []
        writes = [
            Write(UPSERT, row, undo=lambda k=row[0]: undone.append(k), after=lambda k=row[0]: told.append(k))
            for row in (good[0], bad, good[1])
        ]
        batch = db.submit(writes[0])
        for w in writes[1:]:
            assert db.submit(w) is batch
        db.commit(batch)  # the batch as a whole went through: only its bad write failed
        assert [w.error is None for w in writes] == [True, False, True]
        assert undone == ["b"] and told == ["a", "c"]
        assert sorted(k for (k, *_) in db.rows()) == ["a", "c"]
    finally:
        db.close()


def test_a_lone_surrogate_value_is_refused_before_it_reaches_the_store(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    try:
        kv = KvStore(db, KvConfig())
        with pytest.raises(InvalidParams, match="lone surrogate"):
            kv.set("k", "\ud800", None, None, 0, 1, "t")
        assert len(kv) == 0 and db.rows() == []
    finally:
        db.close()


def hold_a_commit(db: KvDb) -> tuple[threading.Event, threading.Thread]:
    """Start a commit (of key 's') that holds until the returned event is set; and its thread."""
    entered, release = threading.Event(), threading.Event()

    def slow() -> int:
        entered.set()
        release.wait(10)
        return 1

    db.conn.create_function("slow", 0, slow)
    batch = db.submit(Write("INSERT INTO kv VALUES ('s', '1', slow(), NULL, 1.0, 0, 1, 't')", ()))
    committer = threading.Thread(target=db.commit, args=(batch,))
    committer.start()
    assert entered.wait(5), "the held commit did not start"
    return release, committer


def test_close_during_a_commit_returns_once_it_is_done(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    db.start()
    release, committer = hold_a_commit(db)
    closer = threading.Thread(target=db.close)
    closer.start()
    wait_for(lambda: db._closing, 5, "close() to begin while the commit is under way")
    release.set()
    closer.join(10)
    committer.join(10)
    assert not closer.is_alive(), "close() hung behind a commit under way"


def test_a_handed_off_write_is_answered_by_the_commit_that_takes_it(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    db.start()
    try:
        answered: list[tuple[BaseException | None, str, list[str]]] = []

        def reply(error: BaseException | None) -> None:
            answered.append((error, threading.current_thread().name, sorted(k for (k, *_) in db.rows())))

        # No commit under way: the caller commits at once, and is answered before hand_off returns.
        lone = Write(UPSERT, ("a", "1", 1, None, 1.0, 0, 1, "t"))
        assert db.hand_off(lone, db.submit(lone), reply) is True
        assert answered == [(None, threading.current_thread().name, ["a"])]
        assert db.hand_off(lone, db.submit(Write(UPSERT, ("x", "1", 1, None, 1.0, 0, 1, "t"))), reply) is False

        # A commit under way: hand_off returns at once; the writer thread commits the write next, then answers.
        release, committer = hold_a_commit(db)
        later = Write(UPSERT, ("b", "2", 1, None, 1.0, 0, 1, "t"))
        assert db.hand_off(later, db.submit(later), reply) is True
        assert len(answered) == 1  # not before its commit
        release.set()
        committer.join(10)
        wait_for(lambda: len(answered) == 2, 5, "the handed-off write's answer")
        assert answered[1] == (None, "ipcd-kv", ["a", "b", "s", "x"])
    finally:
        db.close()


def test_a_write_on_a_closed_store_is_refused_and_left_out_of_memory(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    kv = KvStore(db, KvConfig())
    kv.set("k", 1, None, None, 0, 1, "t")
    db.close()
    item, change = kv.set_later("k", 2, None, None, 0, 1, "t")
    assert change.hand_off(lambda error: None) is False  # nothing to wait for: refused already
    with pytest.raises(InternalError, match="closed"):
        change()
    assert kv.get("k").version == 1 and kv.get("k").value == "1"
    with pytest.raises(InternalError, match="closed"):
        kv.delete("k")
    assert kv.get("k").version == 1


def test_a_handed_off_write_leaves_no_reference_cycle_for_the_gc(short_tmp) -> None:
    """Each write freed as soon as it is answered: garbage the gc must find costs every kv.set."""

    class Holder:  # as the handler's reply holds the write (through its Deferred) and the write holds it
        def __init__(self, change: Change) -> None:
            self.change = change
            self.error: object = "not answered"

        def answer(self, error: object) -> None:
            self.error = error

    db = KvDb(str(short_tmp / "kv.db"))
    kv = KvStore(db, KvConfig())
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        answered = []
        for i in range(10):
            _, change = kv.set_later("k", i, None, None, 0, 1, "t")
            holder = Holder(change)
            assert change.hand_off(holder.answer)
            answered.append(holder.error)
        for i in range(5):  # committed before the hand-off (another thread's commit took it): not handed off
            _, change = kv.set_later("k", i, None, None, 0, 1, "t")
            change()
            holder = Holder(change)
            assert not change.hand_off(holder.answer)
        del change, holder
        gc.collect()
        assert answered == [None] * 10
        assert not [o for o in gc.garbage if isinstance(o, Change)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        db.close()


def test_a_change_sets_every_field_of_a_write(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    try:
        _, change = KvStore(db, KvConfig()).set_later("k", 1, None, None, 0, 1, "t")
        plain = Write(UPSERT, ())
        for name in Write.__slots__:
            assert hasattr(change, name), name
            if name not in ("sql", "params"):
                assert getattr(change, name) == getattr(plain, name), name
        change()
    finally:
        db.close()


def test_an_error_nobody_expected_in_a_commit_still_answers_its_writes(short_tmp) -> None:
    db = KvDb(str(short_tmp / "kv.db"))
    try:

        def undo() -> None:
            raise RuntimeError("a bug in undo")

        bad = Write(UPSERT, ("b", '"\ud800"', 1, None, 1.0, 0, 1, "t"), undo=undo)  # SQLite refuses it
        batch = db.submit(bad)
        answers: list[BaseException | None] = []
        with pytest.raises(RuntimeError, match="a bug in undo"):
            db.hand_off(bad, batch, answers.append)  # this thread commits it, and meets the bug
        assert len(answers) == 1 and answers[0] is not None  # answered all the same: nobody left waiting
        with pytest.raises(Exception):  # noqa: B017 (the waiters get an error too, whatever it is)
            batch.wait(5)
        assert db._committing is False  # and the next commit can run
        ok = Write(UPSERT, ("a", "1", 1, None, 1.0, 0, 1, "t"))
        db.commit(db.submit(ok), 5)
        assert [k for (k, *_) in db.rows()] == ["a"]
    finally:
        db.close()
