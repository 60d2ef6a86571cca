"""`ipcd.logs.methods` against a real ipcd: `logs.query` and `logs.follow`, their params and their bounds.

Paging, filters and followers; hostile patterns, bad values, big results.

Large stores are written before the daemon starts, by the real `Writer`
(as a store from an earlier run would be), so that a test needs no minute of
datagrams to get 200,000 entries.  Everything else goes through the
daemon's real sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Conn, Ipcd, ipcctl_in_process, needs_root, run_as, wait_for
from helpers_logs import NO_LIMIT, entry_ids, notes, query, send, status, wait_stored

from ipcd.config import StoreConfig
from ipcd.logs.filters import make_filters
from ipcd.logs.methods import FILTER_BYTES_PER_STREAM
from ipcd.logs.writer import Received, Writer
from ipcd.wire.logparse import LogEntry

MY_UID = os.getuid()
T0 = time.time() - 3600


def prepare_store(d: Ipcd, batches: Iterator[list[tuple[str, str]]]) -> int:
    """Write (ident, message) rows into the daemon's store before it starts; the last id."""
    d.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = d.state_dir / "ipcd.db"
    w = Writer(str(path), StoreConfig(commit_interval_ms=60_000, retention_interval_s=3600.0, commit_batch=10**7))
    n = 0
    try:
        for batch in batches:
            rows = []
            for ident, message in batch:
                entry = LogEntry(5, 1, ident, None, None, None, None, None, None, message, "rfc3164", False)
                rows.append(Received(T0 + n / 1000, entry, False, os.getpid(), MY_UID, os.getgid(), "pytest", None))
                n += 1
            w.add(rows)
            w.commit()
    finally:
        w.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.chmod(f"{path}{suffix}", 0o600)
    return n


def stored(d: Ipcd) -> int:
    return int(d.call("status")["logs"]["stored"])


def vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key}")


def assert_clean_log(d: Ipcd) -> None:
    err = d.stderr()
    assert "Traceback" not in err and "ERROR" not in err, err[-3000:]


# --- logs.query -----------------------------------------------------------------------------------


def test_logs_query_pages_forward_in_id_order(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, *[b"<13>%s: m%d" % (b"odd" if i % 2 else b"even", i) for i in range(1, 26)])
    wait_stored(d, 25)

    def ids(**params: Any) -> list[int]:
        return [e["id"] for e in query(d, **params)]

    assert ids() == list(range(1, 26))  # default limit 100
    assert ids(limit=10) == list(range(16, 26))  # the newest, in id order
    pages, after = [], 0
    while page := ids(limit=10, after_id=after):
        pages.append(page)
        after = page[-1]
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert ids(limit=5, after_id=10, ident="odd") == [11, 13, 15, 17, 19]
    assert ids(limit=3, ident="odd") == [21, 23, 25]
    for bad in (
        {"limit": 0},
        {"limit": 10001},
        {"after_id": -1},
        {"priority": "loud"},
        {"since": "soonish"},
        {"grep": "(unclosed"},
        {"pid": "one"},
        {"colour": "red"},
    ):
        err = d.call("logs.query", bad)
        assert err["code"] == -32602, (bad, err)
    assert len(query(d, limit=10000)) == 25


@needs_root
def test_non_admin_sees_only_its_own_entries(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config='[control]\nsocket_mode = "0666"\n').start()
    send(d, b"<13>root: secret")

    def child() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>mine: from nobody", d.log_sock)
        with Conn(d.sock) as c:
            wait_for(lambda: c.call("logs.query")["entries"], 10, "nobody's entry")
            own = c.call("logs.query", {})
            other = c.call("logs.query", {"uid": 0})
        return 0, json.dumps([own, other])

    code, out = run_as(65534, 65534, child)
    assert code == 0, out
    own, other = json.loads(out)
    assert [e["message"] for e in own["entries"]] == ["from nobody"]
    assert (other["code"], other["data"]["required_role"]) == (-32001, "admin")
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "logs"))
    assert code == 0 and "from nobody" in out and "secret" not in out
    assert [e["message"] for e in query(d)] == ["secret", "from nobody"]  # root sees both


# --- logs.follow ----------------------------------------------------------------------------------


def test_follow_backlog_then_live_with_filters(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    send(d, b"<14>app: one", b"<11>app: two", b"<11>other: three", b"<10>app: four", b"<15>app: five")
    wait_stored(d, 5)
    with d.conn() as everything, d.conn() as errors, d.conn() as fresh:
        assert everything.call("logs.follow", {"backlog": 3}) == {"following": True, "backlog": 3}
        res = errors.call("logs.follow", {"backlog": 10, "ident": "app", "priority": "err"})
        assert res == {"following": True, "backlog": 2}
        assert fresh.call("logs.follow", {"grep": "six|seven"}) == {"following": True, "backlog": 0}
        send(d, b"<11>app: six", b"<14>app: seven", b"<11>other: eight")
        assert entry_ids(notes(everything, 6)) == [3, 4, 5, 6, 7, 8]
        assert [m["params"]["message"] for m in notes(errors, 3)] == ["two", "four", "six"]
        got = notes(fresh, 2)
        assert [m["params"]["message"] for m in got] == ["six", "seven"]
        assert got[0]["params"] == query(d, grep="six")[0]  # the same entry shape as logs.query
        # Nothing else was queued for the filtered followers.
        send(d, b"<11>app: nine")
        assert [m["params"]["message"] for m in notes(errors, 1)] == ["nine"]
        assert notes(everything, 1)[0]["params"]["message"] == "nine"


def test_follow_has_no_gap_or_repeat_across_the_backlog(make_ipcd: Callable[..., Ipcd]) -> None:
    # A queue that never overflows: this test is about the boundary, not lag.
    d = make_ipcd(config=f"{NO_LIMIT}[control]\nstream_queue = 1000000\n").start()
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                s.sendto(b"<13>flow: %d" % sent[0], d.log_sock)
                sent[0] += 1

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_for(lambda: status(d)["logs"]["stored"] >= 500, 20, "the flow to start")
        with d.conn() as c:
            # Opened mid-stream: the backlog is read while new commits keep coming.
            assert c.call("logs.follow", {"backlog": 100}) == {"following": True, "backlog": 100}
            at_open = status(d)["logs"]["stored"]
            wait_for(lambda: status(d)["logs"]["stored"] >= at_open + 1000, 20, "1000 more entries")
            stop.set()
            t.join(30)
            wait_stored(d, sent[0])
            ids = []
            while not ids or ids[-1] < sent[0]:
                ids.extend(entry_ids(notes(c, 1)))
    finally:
        stop.set()
        t.join(30)
    assert ids == list(range(ids[0], sent[0] + 1))
    assert ids[0] <= at_open - 99  # the backlog reached back before the follow began


def test_stalled_follower_lags_without_slowing_anyone(make_ipcd: Callable[..., Ipcd]) -> None:
    max_lag = 200
    d = make_ipcd(config=f"{NO_LIMIT}follow_max_lag = {max_lag}\n[control]\nstream_queue = 64\n").start()
    n, chunk = 600, 50
    payload = b"p" * 2000  # the stalled reader's socket buffer fills after some 100 entries
    with d.conn() as stalled, d.conn() as reader:
        assert stalled.call("logs.follow") == {"following": True, "backlog": 0}  # and then it reads nothing
        assert reader.call("logs.follow") == {"following": True, "backlog": 0}
        got: list[int] = []
        for i in range(0, n, chunk):
            send(d, *[b"<13>stall: %d " % j + payload for j in range(i, i + chunk)])
            wait_stored(d, i + chunk)  # intake keeps going
            got.extend(entry_ids(notes(reader, chunk)))  # and the other follower gets each entry
        assert got == list(range(1, n + 1))
        assert [e["id"] for e in query(d, limit=n)] == got  # queries are answered too
        # Now the stalled one reads: what it was sent, then how much it missed, then the
        # newest max_lag entries, read on from the store: it never holds more than that.
        msgs = notes(stalled, 1)
        while msgs[-1]["method"] != "lagged":
            msgs.extend(notes(stalled, 1))
        kept = entry_ids(msgs[:-1])
        assert kept == list(range(1, len(kept) + 1)) and len(kept) < n - max_lag
        missed = msgs[-1]["params"]["missed"]
        assert msgs[-1]["params"] == {"stream": "logs.follow", "missed": missed}
        rest = entry_ids(notes(stalled, n - len(kept) - missed))
        assert rest == list(range(len(kept) + missed + 1, n + 1))
        assert len(kept) + missed + len(rest) == n
        send(d, b"<13>stall: back")  # and it is live again
        assert notes(stalled, 1)[0]["params"]["id"] == n + 1
        assert notes(reader, 1)[0]["params"]["id"] == n + 1


def test_follower_that_keeps_reading_misses_nothing_in_a_burst(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config=NO_LIMIT).start()
    n = 5000
    with d.conn() as c:
        assert c.call("logs.follow")["following"] is True
        send(d, *[b"<13>burst: %d" % i for i in range(n)])
        msgs = notes(c, 1)
        while msgs[-1]["method"] == "logs.entry" and msgs[-1]["params"]["id"] < n:
            msgs.extend(notes(c, 1))
    assert entry_ids(msgs) == list(range(1, n + 1))


# --- no pattern holds the daemon ------------------------------------------------------------------


def test_a_catastrophic_pattern_never_holds_the_daemon(make_ipcd: Callable[..., Ipcd]) -> None:
    # The attack: "a"*40 + "!" entries and grep (a+)+$, which takes a backtracking
    # engine hours per entry while holding the GIL; here over 200,000 of them, from four
    # connections at once and a follower, while others ping and log.
    d = make_ipcd(f"{NO_LIMIT}[control]\nquery_timeout_s = 0.2\n")
    n = prepare_store(d, ([("a", "a" * 40 + "!")] * 20_000 for _ in range(10)))
    d.start()
    stop = threading.Event()
    replies: list[Any] = []

    def hostile() -> None:
        with d.conn(30) as c:
            try:
                while not stop.is_set():
                    replies.append(c.call("logs.query", {"grep": "(a+)+$", "limit": 10_000}))
            except (OSError, AssertionError):  # the daemon stopped under it (SIGTERM below)
                pass

    threads = [threading.Thread(target=hostile) for _ in range(4)]
    for t in threads:
        t.start()
    follower = d.conn(30)
    try:
        assert follower.call("logs.follow", {"grep": "(a+)+$", "after_id": 0})["following"]
        wait_for(lambda: len(replies) >= 4, 30, "the hostile queries to be answered")
        for i in range(10):
            with Conn(d.sock, timeout_s=1.0) as c:  # answered within a second, or the test fails
                assert c.call("ping")["pong"]
            send(d, b"<13>bystander: still logging %d" % i)
        wait_for(lambda: len(query(d, ident="bystander")) == 10, 10, "the bystander's entries")
        assert len(replies) >= 4
        # SIGTERM is obeyed while hostile queries run.
        assert d.stop(timeout_s=20) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        follower.close()
    timeouts = [r for r in replies if isinstance(r, dict) and r.get("code") == -32002]
    assert timeouts and all(r["data"] == {"limit": "query_timeout_s", "value": 0.2} for r in timeouts), replies[:3]
    assert all(r.get("code") in (-32002, None) for r in replies if isinstance(r, dict)), replies[:3]
    assert n == 200_000
    assert_clean_log(d)


def test_a_query_past_query_timeout_s_is_stopped(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd("[control]\nquery_timeout_s = 0.01\n")
    prepare_store(d, ([("app", f"line {i}") for i in range(20_000)] for _ in range(10)))
    d.start()
    err = d.call("logs.query", {"pid": 999_999})  # no index: a scan of 200,000 entries
    assert err["code"] == -32002 and err["data"] == {"limit": "query_timeout_s", "value": 0.01}
    assert [e["id"] for e in query(d, limit=3)] == [199_998, 199_999, 200_000]  # the next one is answered
    assert_clean_log(d)


# --- bad values: -32602, and nothing in the log ---------------------------------------------------


@pytest.fixture(scope="module")
def est() -> Iterator[Ipcd]:
    """A daemon in a UTC-5 zone (POSIX TZ: no tzdata needed) with a few entries."""
    root = Path(tempfile.mkdtemp(prefix="ipcd-", dir="/tmp"))
    os.chmod(root, 0o755)
    d = Ipcd(root, NO_LIMIT, env={"TZ": "EST5"})
    try:
        d.start()
        send(d, *[b"<13>app: entry %d" % i for i in range(5)])
        wait_for(lambda: stored(d) == 5, 10, "five entries")
        yield d
    finally:
        d.kill()
        shutil.rmtree(root, ignore_errors=True)


NESTED_2047 = "(" * 2047 + "a" + ")" * 2047

EDGES = [
    ("logs.query", {"after_id": 2**63 - 1}, []),
    ("logs.query", {"after_id": 2**63}, -32602),
    ("logs.query", {"before_id": 2**63 - 1}, 5),
    ("logs.query", {"before_id": 0}, []),
    ("logs.query", {"before_id": -1}, -32602),
    ("logs.query", {"since": "9999-12-31T18:59:59"}, []),  # 23:59:59 UTC: the last second there is
    ("logs.query", {"since": "9999-12-31T19:00:00"}, -32602),
    ("logs.query", {"since": "9999-12-31T23:59:59"}, -32602),
    ("logs.query", {"until": "9999-12-31T18:59:59"}, 5),
    ("logs.query", {"until": "9999-12-31T19:00:00"}, -32602),
    ("logs.query", {"since": 1e300}, []),
    ("logs.query", {"since": "@" + "9" * 16}, -32602),
    ("logs.query", {"grep": "a{4294967296}"}, -32602),
    ("logs.query", {"grep": "a{1001}"}, -32602),
    ("logs.query", {"grep": "a{996}"}, []),
    ("logs.query", {"grep": "a{997}"}, -32602),
    ("logs.query", {"grep": NESTED_2047}, []),
    ("logs.query", {"grep": "(" + NESTED_2047 + ")"}, -32602),
    ("logs.query", {"grep": "(" * 5000 + "a" + ")" * 5000}, -32602),
    ("logs.query", {"grep": "|".join(f"w{i}x" for i in range(100_000))}, -32602),
    ("logs.query", {"grep": "(?<=x)y"}, -32602),
    ("logs.query", {"priority": "warning..err"}, []),
    ("logs.query", {"priority": "notice.."}, 5),
    ("logs.query", {"priority": "..notice"}, 5),
    ("logs.query", {"priority": ".."}, -32602),
    ("logs.query", {"priority": 8}, -32602),
    ("logs.query", {"priority": "notice..loud"}, -32602),
    ("logs.query", {"ident": ["app"] + [f"x{i}" for i in range(63)]}, 5),
    ("logs.query", {"ident": [f"x{i}" for i in range(65)]}, -32602),
    ("logs.query", {"ident": []}, -32602),
    ("logs.query", {"ident": [1]}, -32602),
    ("logs.query", {"unit": "x" * 1024}, []),
    ("logs.query", {"unit": "x" * 1025}, -32602),
    ("logs.query", {"limit": 10_000}, 5),
    ("logs.query", {"limit": 10_001}, -32602),
    ("logs.query", {"limit": 0}, -32602),
    ("logs.follow", {"after_id": 2**63 - 1}, "follow"),
    ("logs.follow", {"backlog": 10_000}, "follow 5"),  # all 5 there are, first
    ("logs.follow", {"backlog": 10_001}, -32602),
    ("logs.follow", {"after_id": 2, "backlog": 2}, -32602),
    ("logs.follow", {"since": "9999-12-31T19:00:00"}, -32602),
    ("logs.follow", {"grep": "a{4294967296}"}, -32602),
    ("logs.follow", {"priority": "x..y"}, -32602),
]


@pytest.mark.parametrize(("method", "params", "expect"), EDGES, ids=[f"{m} {json.dumps(p)[:60]}" for m, p, _ in EDGES])
def test_bad_values_at_their_edges(est: Ipcd, method: str, params: dict[str, Any], expect: Any) -> None:
    log_before = est.stderr()
    reply = est.call(method, params)
    if expect == -32602:
        assert reply["code"] == -32602, reply
    elif expect == "follow":
        assert reply == {"following": True, "backlog": 0}
    elif expect == "follow 5":
        assert reply == {"following": True, "backlog": 5}
    elif isinstance(expect, int):
        assert len(reply["entries"]) == expect, reply
    else:
        assert reply["entries"] == expect, reply
    assert est.stderr() == log_before  # not one line in ipcd's log for a bad request


# --- big results ----------------------------------------------------------------------------------


def test_a_large_result_is_refused_without_being_built(make_ipcd: Callable[..., Ipcd]) -> None:
    # The issue: 2000 of your own 64 KiB entries in one logs.query added 530 MB.
    d = make_ipcd()
    prepare_store(d, ([("big", f"{i:05d}" + "x" * 65_000) for i in range(b * 200, b * 200 + 200)] for b in range(10)))
    d.start()
    pid = d.proc.pid if d.proc else 0
    assert d.call("ping")["pong"]
    before = vm_kib(pid, "VmRSS")
    with d.conn(60) as c:
        for _ in range(3):
            err = c.call("logs.query", {"limit": 2000})
            assert err["code"] == -32002 and err["data"]["limit"] == "max_queued_bytes_per_connection", err
            assert "ask for fewer entries" in err["message"]
        page = c.call("logs.query", {"limit": 100})["entries"]  # 6.5 MB: under the 8 MiB default
        assert [int(e["message"][:5]) for e in page] == list(range(1900, 2000))
    grown = vm_kib(pid, "VmHWM") - before
    assert grown < 100 * 1024, f"peak grew by {grown} KiB"
    assert_clean_log(d)


def test_stored_json_too_deep_to_decode_goes_out_as_text(make_ipcd: Callable[..., Ipcd]) -> None:
    # A store written before nesting was capped may hold a JSON datagram's fields 5000 deep.
    d = make_ipcd()
    prepare_store(d, iter([[("old", "deep"), ("old", "fine")]]))
    deep = "[" * 5000 + "]" * 5000
    with sqlite3.connect(d.state_dir / "ipcd.db") as db:
        db.execute("UPDATE entries SET fields = ? WHERE id = 1", (deep,))
        db.execute("UPDATE entries SET fields = ? WHERE id = 2", ('{"k": 1}',))
    d.start()
    assert [e["fields"] for e in query(d)] == [deep, {"k": 1}]
    with d.conn() as c:
        assert c.call("logs.follow", {"after_id": 0}) == {"following": True, "backlog": 0}
        msgs = notes(c, 2)
        assert [m["params"]["fields"] for m in msgs] == [deep, {"k": 1}]
        send(d, b"<13>new: and the follow goes on")
        assert notes(c, 1)[0]["params"]["message"] == "and the follow goes on"
    assert_clean_log(d)


# --- logs.follow: many followers, after_id --------------------------------------------------------


def tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_followers_do_not_cost_a_thread_each(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd("[control]\nstream_queue = 100000\nmax_streams_per_connection = 400\n").start()
    pid = d.proc.pid if d.proc else 0
    with d.conn() as c:
        assert c.call("logs.follow")["following"]  # the connection, its pump and the follow thread exist now
        before = tasks(pid)
        c.send(b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"logs.follow"}\n' % i for i in range(1000, 1299)))
        replies = [c.recv_json() for _ in range(299)]
        assert all(r["result"] == {"following": True, "backlog": 0} for r in replies)
        # 300 followers, not one thread more. Not ==: the thread that served the readiness
        # ping may still have been ending when `before` was counted.
        assert tasks(pid) <= before
        with Conn(d.sock, timeout_s=1.0) as other:
            assert other.call("ping")["pong"]
        send(d, b"<13>app: to all 300")
        assert entry_ids(notes(c, 300)) == [1] * 300
    assert_clean_log(d)


def follow_weight(**params: Any) -> int:
    """The streams a follow with these filters counts for (ipcd's own estimate, for the test's edges)."""
    return 1 + make_filters(params, time.time()).held_bytes() // FILTER_BYTES_PER_STREAM


@pytest.mark.parametrize(
    "names",
    [
        [f"{i:04d}" for i in range(64)],  # short names: what each costs beyond its characters counts most
        [f"\U0001f600{i:03d}" for i in range(64)],  # 4 bytes a character, as Python keeps them
        [f"{i:04d}" + "y" * 1000 for i in range(64)],
    ],
)
def test_a_follows_filters_are_weighed_at_least_as_they_are_held(names: list[str]) -> None:
    """The estimate covers what the decoded filters take in memory (the follow's own stream counts one more)."""
    text = json.dumps({"ident": names, "unit": names, "grep": "y" * 100})
    tracemalloc.start()
    try:
        params = json.loads(text)
        f = make_filters(params, time.time())
        del params
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held <= f.held_bytes() + FILTER_BYTES_PER_STREAM, (held, f.held_bytes())


def test_a_follows_filters_count_as_streams_one_per_kib(make_ipcd: Callable[..., Ipcd]) -> None:
    """A follow holds its filters' texts as long as it lasts: it counts one stream, plus one for each KiB
    they take, against max_streams_per_connection."""
    d = make_ipcd("[control]\nmax_streams_per_connection = 4\n").start()
    filters = {"ident": ["a" * 942, "b" * 942], "unit": ["c" * 942, "d" * 942]}  # just under 4 KiB held
    assert follow_weight(**filters) == 4
    assert follow_weight(**filters, grep="y") == 5  # the edge: a pattern of one character more
    with d.conn() as a, d.conn() as b:
        assert a.call("logs.follow", filters) == {"following": True, "backlog": 0}
        err = a.call("kv.watch")  # 4 streams: the connection's all
        assert err["code"] == -32002 and err["data"]["limit"] == "max_streams_per_connection", err
        err = b.call("logs.follow", {**filters, "grep": "y"})
        assert err["code"] == -32002 and err["data"]["limit"] == "max_streams_per_connection", err
        assert b.call("logs.follow", filters)["following"]  # the refused one left nothing held
        assert b.call("logs.follow")["code"] == -32002


def test_follow_after_id_resumes_with_no_gap_and_no_repeat(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(NO_LIMIT).start()
    send(d, *[b"<13>%s: %d" % (b"odd" if i % 2 else b"even", i) for i in range(1, 31)])
    wait_for(lambda: stored(d) == 30, 10, "30 entries")
    with d.conn() as c:
        assert c.call("logs.follow", {"backlog": 10}) == {"following": True, "backlog": 10}
        seen = entry_ids(notes(c, 10))
    assert seen == list(range(21, 31))
    send(d, *[b"<13>%s: %d" % (b"odd" if i % 2 else b"even", i) for i in range(31, 51)])  # while away
    wait_for(lambda: stored(d) == 50, 10, "50 entries")
    with d.conn() as c, d.conn() as odd:
        assert c.call("logs.follow", {"after_id": seen[-1]}) == {"following": True, "backlog": 0}
        assert odd.call("logs.follow", {"after_id": 40, "ident": "odd"})["following"]
        assert entry_ids(notes(c, 20)) == list(range(31, 51))
        assert entry_ids(notes(odd, 5)) == [41, 43, 45, 47, 49]
        send(d, b"<13>odd: 51", b"<13>even: 52")
        assert entry_ids(notes(c, 2)) == [51, 52]
        assert entry_ids(notes(odd, 1)) == [51]


def test_follow_after_id_too_far_back_skips_ahead_and_says_so(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(f"{NO_LIMIT}follow_max_lag = 5\n").start()
    send(d, *[b"<13>app: %d" % i for i in range(20)])
    wait_for(lambda: stored(d) == 20, 10, "20 entries")
    with d.conn() as c:
        assert c.call("logs.follow", {"after_id": 0})["following"]
        lagged, *rest = notes(c, 6)
        assert lagged["method"] == "lagged" and lagged["params"] == {"stream": "logs.follow", "missed": 15}
        assert entry_ids(rest) == [16, 17, 18, 19, 20]
    with d.conn() as c:  # follow_max_lag behind, exactly: nothing skipped
        assert c.call("logs.follow", {"after_id": 15})["following"]
        assert entry_ids(notes(c, 5)) == [16, 17, 18, 19, 20]
        assert c.call("ping")["pong"]  # the next line is the reply: no lagged came
    with d.conn() as c:  # one more: one skipped
        assert c.call("logs.follow", {"after_id": 14})["following"]
        lagged, *rest = notes(c, 6)
        assert lagged["params"] == {"stream": "logs.follow", "missed": 1} and entry_ids(rest) == [16, 17, 18, 19, 20]


# --- the params, against a live daemon ------------------------------------------------------------


def test_query_params(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(NO_LIMIT).start()
    sent = [(0, "kernel"), (3, "sshd"), (4, "sshd"), (5, "cron"), (6, "sshd"), (7, "app"), (3, "app"), (2, "kernel")]
    send(d, *[b"<%d>%s: %d" % (p + 8, i.encode(), n) for n, (p, i) in enumerate(sent, 1)])
    wait_for(lambda: stored(d) == len(sent), 10, "the entries")

    def ids(**params: Any) -> list[int]:
        return [e["id"] for e in query(d, **params)]

    assert ids(priority="err") == [1, 2, 7, 8]
    assert ids(priority="warning..err") == [2, 3, 7]
    assert ids(priority="err..warning") == [2, 3, 7]
    assert ids(priority="notice..") == [4, 5, 6]
    assert ids(priority="..crit") == [1, 8]
    assert ids(priority=6) == [1, 2, 3, 4, 5, 7, 8]
    assert ids(ident="sshd") == [2, 3, 5]
    assert ids(ident=["sshd", "kernel"]) == [1, 2, 3, 5, 8]
    assert ids(ident=["sshd", "kernel"], priority="err") == [1, 2, 8]
    assert ids(before_id=6, limit=2) == [4, 5]  # paging back: the newest below it
    assert ids(before_id=4, limit=2) == [2, 3]
    assert ids(after_id=2, before_id=6) == [3, 4, 5]
    assert ids(pid=os.getpid()) == list(range(1, 9))  # the trusted pid: this process sent them all
    assert ids(pid=1) == []
    assert ids(uid=MY_UID) == list(range(1, 9))
    now = time.time()
    assert ids(since=now - 60, until=now + 60) == list(range(1, 9))
    assert ids(since="-1m", ident="cron") == [4]
    assert ids(until=now - 3600) == []
    unit = query(d)[0]["sender_unit"]  # whatever this process's cgroup gives
    assert ids(unit="no-such.service") == []
    if unit is not None:
        assert ids(unit=[unit, "no-such.service"]) == list(range(1, 9))


def test_methods_describes_every_param(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    table = {m["name"]: m for m in d.call("methods")["methods"]}
    # In the order plain commands pass them: the params that came later come last.
    filters = ["since", "until", "priority", "ident", "pid", "uid", "grep"]
    query_params = table["logs.query"]["params"]
    follow_params = table["logs.follow"]["params"]
    assert [p["name"] for p in query_params] == [*filters, "limit", "after_id", "unit", "before_id"]
    assert [p["name"] for p in follow_params] == [*filters, "backlog", "unit", "after_id"]
    for p in query_params + follow_params:
        assert p["doc"] and p["type"] and p["required"] is False, p
    assert {p["name"]: p["type"] for p in query_params}["ident"] == "string|strings"
    assert "RE2" in {p["name"]: p["doc"] for p in query_params}["grep"]


@needs_root
def test_non_admin_follow_after_id_sees_only_its_own(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(f'{NO_LIMIT}[control]\nsocket_mode = "0666"\n').start()
    send(d, b"<13>root: secret 1")

    def child() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>mine: first", d.log_sock)
        with Conn(d.sock) as c:
            wait_for(lambda: c.call("logs.query")["entries"], 10, "nobody's entry")
            assert c.call("logs.follow", {"after_id": 0})["following"]
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"<13>mine: second", d.log_sock)
            got = [c.recv_json()["params"]["message"] for _ in range(2)]
            back = c.call("logs.query", {"before_id": 10**6})
        return 0, json.dumps([got, back])

    code, out = run_as(65534, 65534, child)
    assert code == 0, out
    got, back = json.loads(out)
    assert got == ["first", "second"]
    assert [e["message"] for e in back["entries"]] == ["first", "second"]
