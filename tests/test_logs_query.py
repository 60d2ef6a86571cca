"""Reading the log without a daemon: RE2 patterns, id and time bounds, deadlines, reply size, followers.

Everything runs on a real SQLite store written by the real `Writer`;
followers write through a real `Outbox` to one end of a socketpair, and the
test reads the other end, as a client would.
"""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from ipcd.config import StoreConfig
from ipcd.control.streams import Outbox, Stream
from ipcd.errors import LimitReached
from ipcd.logs.filters import Filters, make_filters, parse_priority, parse_time
from ipcd.logs.follow import PAGE, Follower, FollowHub, FollowLimits
from ipcd.logs.grep import MAX_PATTERN_CHARS, MAX_PROGRAM_SIZE, GrepError, compile_grep
from ipcd.logs.query import MAX_ID, Reader, time_to_id
from ipcd.logs.writer import Received, Writer
from ipcd.wire.logparse import LogEntry

T0 = 1_790_000_000.0


def row(
    message: str = "m", *, t: float = T0, prio: int = 5, ident: str = "tag", uid: int = 0, unit: str | None = None
) -> Received:
    entry = LogEntry(prio, 1, ident, None, None, None, None, None, None, message, "rfc3164", False)
    return Received(t, entry, False, 100, uid, 0, "sender", unit)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ipcd.db"


@pytest.fixture
def store(path: Path) -> Iterator[Callable[[list[Received]], int]]:
    """store(rows) -> the last id: rows written and committed by the real writer."""
    w = Writer(str(path), StoreConfig(commit_interval_ms=60_000, retention_interval_s=3600.0, commit_batch=10**7))

    def add(rows: list[Received]) -> int:
        w.add(rows)
        w.commit()
        return w.next_id - 1

    yield add
    w.close()


@pytest.fixture
def reader(path: Path, store: Any) -> Iterator[Reader]:
    store([])  # the schema exists before the first read
    r = Reader(str(path))
    yield r
    r.close()


def ids(entries: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in entries]


# --- grep: RE2 and its bounds ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "hit"),
    [
        (r"disk (full|error)", "Disk Full on sda", True),  # no capital: case ignored
        (r"Disk", "disk full", False),  # a capital: case matters
        (r"\d{3}\.\d+", "took 123.5 ms", True),
        (r"(?i)DISK", "disk", True),
        (r"^ab$", "ab", True),
        (r"\bssh\w*", "sshd: Accepted", True),
        (r"жёлтый", "ЖЁЛТЫЙ свет", True),  # case folding beyond ASCII
        ("(a+)+$", "a" * 40 + "!", False),  # a backtracking engine takes hours here
        ("(x+x+)+y", "x" * 5000, False),
        ("[a{99999}]", "{", True),  # in a class, { is a literal
        (r"\{99999}", "{99999}", True),
    ],
)
def test_grep_is_re2_with_smart_case(pattern: str, text: str, hit: bool) -> None:
    assert compile_grep(pattern).search_text(text) is hit


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(unclosed", "bad regular expression: missing ): (unclosed (RE2 syntax)"),
        ("(?=ahead)", "bad regular expression: invalid perl operator: (?= (RE2 syntax)"),
        (r"(a)\1", r"bad regular expression: invalid escape sequence: \1 (RE2 syntax)"),
        ("a{1001}", "bad regular expression: invalid repetition size: {1001}, at most 1000 (RE2 syntax)"),
        ("a{4294967296}", "bad regular expression: invalid repetition size: {4294967296} (at most 1000)"),
        (
            "x{2,99999999999999999999}",
            "bad regular expression: invalid repetition size: {2,99999999999999999999} (at most 1000)",
        ),
        (
            "a" * (MAX_PATTERN_CHARS + 1),
            f"pattern too long: {MAX_PATTERN_CHARS + 1} characters, at most {MAX_PATTERN_CHARS}",
        ),
        ("(" * 5000 + "a" + ")" * 5000, f"pattern too long: 10001 characters, at most {MAX_PATTERN_CHARS}"),
        ("a{997}", "pattern too complex: it compiles to 1001 RE2 instructions, at most 1000"),
        ("|".join(f"w{i}x" for i in range(100_000)), "pattern too long: 788889 characters"),
        (r"\pL" * 1365, "pattern too large: RE2 cannot compile it in 2048 KiB"),
    ],
)
def test_grep_refuses_with_the_reason(pattern: str, message: str, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GrepError) as e:
        compile_grep(pattern)
    assert str(e.value).startswith(message)
    assert capfd.readouterr() == ("", "")  # RE2 writes nothing to ipcd's stderr


def test_grep_bounds_at_their_edges() -> None:
    assert compile_grep("a{996}")._re.ProgramSize() == MAX_PROGRAM_SIZE
    nested = "(" * 2047 + "a" + ")" * 2047
    assert len(nested) == MAX_PATTERN_CHARS - 1 and compile_grep(nested).search_text("a")
    longest = "(" * 2047 + "ab" + ")" * 2047
    assert len(longest) == MAX_PATTERN_CHARS and compile_grep(longest).search_text("xaby")


def test_grep_releases_the_gil_while_it_matches() -> None:
    # About the costliest match the bounds allow: RE2's DFA gives up on a{990}! over
    # "aaa...", and its NFA takes text length x program size.  This thread counts
    # meanwhile: had the match held the GIL, it could not count until the match ended.
    g = compile_grep("a{990}!")
    matching = threading.Thread(target=g.search, args=(b"a" * 65536,))
    counted = 0
    matching.start()
    while matching.is_alive():
        counted += 1
    matching.join()
    assert counted > 1000


# --- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "levels"),
    [
        (3, (0, 3)),
        ("err", (0, 3)),
        ("warning..err", (3, 4)),
        ("err..warning", (3, 4)),
        ("err..", (3, 7)),
        ("..err", (0, 3)),
        ("0..7", (0, 7)),
        ("debug..debug", (7, 7)),
    ],
)
def test_priority_levels_and_ranges(value: Any, levels: tuple[int, int]) -> None:
    assert parse_priority(value) == levels


@pytest.mark.parametrize("value", ["..", "loud..err", "err..8", 8, -1, "err...warning"])
def test_priority_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_priority(value)


def test_make_filters_names_and_bounds() -> None:
    f = make_filters({"ident": ["a", "b", "a"], "unit": "x.service", "before_id": 9}, T0)
    assert (f.idents, f.units, f.before_id) == (("a", "b"), ("x.service",), 9)
    assert make_filters({"ident": ["i"] * 64}, T0).idents == ("i",)
    for params, message in (
        ({"ident": [f"i{n}" for n in range(65)]}, "ident: at most 64 names, got 65"),
        ({"unit": []}, "unit: must not be an empty list"),
        ({"unit": ["a", 1]}, "unit: must be a string or a list of strings"),
        ({"ident": "x" * 1025}, "ident: a name longer than 1024 characters"),
        ({"grep": "a{4294967296}"}, "grep: bad regular expression"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            make_filters(params, T0)


def test_parse_time_far_dates_are_refused_not_crashed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "EST5")  # UTC-5, as POSIX TZ: no tzdata needed
    time.tzset()
    try:
        # The last local second whose UTC time datetime can hold, and the next one.
        assert parse_time("9999-12-31T18:59:59", 0.0) == 253402300799.0
        for value in ("9999-12-31T19:00:00", "9999-12-31T23:59:59", "@" + "9" * 15 + "9", "-99999999999999 days"):
            with pytest.raises(ValueError, match="not a time"):
                parse_time(value, 0.0)
        assert parse_time("2h ago", 7200.0) == 0.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# --- ids and time -----------------------------------------------------------------------------


def test_id_bounds_at_the_edges(store: Any, reader: Reader) -> None:
    store([row(f"m{i}") for i in range(10)])
    q = reader.query
    assert ids(q(Filters(after_id=MAX_ID))) == []
    assert ids(q(Filters(before_id=0))) == []
    assert ids(q(Filters(before_id=1))) == []
    assert ids(q(Filters(before_id=MAX_ID))) == list(range(1, 11))
    assert ids(q(Filters(before_id=8, limit=3))) == [5, 6, 7]  # the newest below it, in id order
    assert ids(q(Filters(after_id=2, before_id=8, limit=3))) == [3, 4, 5]  # with after_id, the oldest
    assert ids(q(Filters(after_id=7, before_id=8))) == []
    assert ids(q(Filters(after_id=0, limit=1))) == [1]


def test_time_bounds_by_binary_search_over_ids(path: Path, store: Any, reader: Reader) -> None:
    rnd = random.Random(7)
    t, rows = T0, []
    for i in range(3000):
        t += rnd.choice((0.0, 0.0, 0.5, 1.0, 7.25))  # equal times, small and large steps
        rows.append(row(f"m{i}", t=t))
    store(rows)
    with sqlite3.connect(path) as c:  # retention leaves gaps, and whole runs of ids gone
        c.execute("DELETE FROM entries WHERE id % 7 = 0 OR id BETWEEN 1000 AND 1500 OR id <= 20")
    with sqlite3.connect(path) as c:
        stored = c.execute("SELECT id, time FROM entries ORDER BY id").fetchall()
    times = sorted({t for _, t in stored})
    probes = [T0 - 1, stored[0][1], stored[-1][1], stored[-1][1] + 1, *rnd.sample(times, 40)]
    probes += [p + d for p in rnd.sample(times, 20) for d in (-0.1, 0.1)]
    for since in probes:
        until = since + rnd.choice((0, 3, 50, 10_000))
        want = [i for i, t in stored if since <= t <= until]
        assert ids(reader.query(Filters(since=since, until=until, limit=10_000))) == want, (since, until)
        assert ids(reader.query(Filters(since=since, limit=5))) == [i for i, t in stored if t >= since][-5:]
        assert ids(reader.query(Filters(until=until, after_id=0, limit=5))) == [i for i, t in stored if t <= until][:5]
    with reader.session(Filters(), 5.0) as db:
        assert time_to_id(db, T0 - 1, after=False) == stored[0][0]
        assert time_to_id(db, stored[-1][1], after=True) == stored[-1][0] + 1
        probes_run = []
        db.set_trace_callback(probes_run.append)
        time_to_id(db, times[len(times) // 2], after=False)
        db.set_trace_callback(None)
        assert len(probes_run) <= 2 + 13  # first, last, then log2(3000) rowid lookups


def test_time_bounds_on_an_empty_store(reader: Reader) -> None:
    assert reader.query(Filters(since=T0, until=T0 + 5)) == []


# --- deadline --------------------------------------------------------------------------------


@pytest.fixture
def big(store: Any) -> int:
    """200,000 entries: a full scan takes well over the tests' deadlines."""
    for start in range(0, 200_000, 20_000):
        store([row("a" * 40 + "!", t=T0 + (start + i) / 1000, ident=f"i{i % 9}") for i in range(20_000)])
    return 200_000


@pytest.mark.parametrize(
    ("f", "timeout_s"),
    [
        (Filters(grep="(a+)+$"), 0.02),  # stopped by the grep function
        (Filters(pid=4242), 0.001),  # no grep: stopped by SQLite's progress handler
    ],
)
def test_query_stops_at_its_deadline(big: int, reader: Reader, f: Filters, timeout_s: float) -> None:
    with pytest.raises(LimitReached) as e:
        reader.query_json(f, timeout_s, 8 << 20)
    assert e.value.code == -32002 and e.value.data == {"limit": "query_timeout_s", "value": timeout_s}
    assert f"query took longer than query_timeout_s = {timeout_s:g} s" in e.value.message
    # The connection goes back to the pool clean: the next query on it is answered.
    assert ids(reader.query(Filters(limit=2), 5.0)) == [big - 1, big]
    assert ids(reader.query(Filters(grep="(a+)+$", since=T0 + 199.9), 5.0)) == []


def test_pool_keeps_room_for_other_uids(path: Path, store: Any) -> None:
    store([row("m")])
    r = Reader(str(path), size=4)  # a non-admin uid may hold two at once
    try:
        with r.session(Filters(), 5.0, uid=1000), r.session(Filters(), 5.0, uid=1000):
            with pytest.raises(LimitReached, match="query_timeout_s"):
                r.query(Filters(), 0.05, uid=1000)  # waiting for the pool counts against the deadline
            assert len(r.query(Filters(), 1.0, uid=1001)) == 1
            assert len(r.query(Filters(), 1.0)) == 1  # an admin's call
        assert len(r.query(Filters(), 1.0, uid=1000)) == 1
    finally:
        r.close()


# --- reply size and stored JSON ----------------------------------------------------------------


def test_reply_size_limit_at_its_edge(store: Any, reader: Reader) -> None:
    store([row("x" * 1000 + "é" * 500) for _ in range(20)])
    whole = reader.query_json(Filters(), 5.0, 1 << 30)
    size = len(whole.encode())
    assert json.loads(whole)["entries"] == reader.query(Filters())
    assert reader.query_json(Filters(), 5.0, size) == whole
    with pytest.raises(LimitReached) as e:
        reader.query_json(Filters(), 5.0, size - 1)
    assert e.value.code == -32002 and e.value.data == {"limit": "max_queued_bytes_per_connection", "value": size - 1}


def test_a_large_result_is_refused_before_it_is_built(store: Any, reader: Reader) -> None:
    for _ in range(10):
        store([row("y" * 65000) for _ in range(200)])  # 2000 entries of 64 KiB: 130 MB as a reply
    cap = 8 << 20
    tracemalloc.start()
    try:
        with pytest.raises(LimitReached, match="max_queued_bytes_per_connection"):
            reader.query_json(Filters(limit=2000), 5.0, cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * cap, peak


def test_stored_json_that_cannot_be_decoded_is_kept_as_a_string(path: Path, store: Any, reader: Reader) -> None:
    store([row("deep"), row("bad"), row("fine")])
    deep = "[" * 100_000 + "]" * 100_000
    with sqlite3.connect(path) as c:
        c.execute("UPDATE entries SET fields = ? WHERE id = 1", (deep,))
        c.execute("UPDATE entries SET structured_data = ? WHERE id = 2", ('{"broken": ',))
        c.execute("UPDATE entries SET fields = ? WHERE id = 3", ('{"k": [1, 2]}',))
    entries = reader.query(Filters())
    assert [e["fields"] for e in entries] == [deep, None, {"k": [1, 2]}]
    assert entries[1]["structured_data"] == '{"broken": '
    assert json.loads(reader.query_json(Filters(), 5.0, 8 << 20))["entries"] == entries


# --- followers -----------------------------------------------------------------------------------


class Client:
    """A real Outbox writing to one end of a socketpair; the test reads the other, as a client."""

    def __init__(self, queue: int = 1024, max_bytes: int = 8 << 20) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.theirs.settimeout(10.0)
        self.outbox = Outbox(self, queue, max_bytes)
        self.buf = b""

    def stream(self) -> Stream:
        return Stream(self, "logs.follow")

    def send(self, data: bytes) -> None:
        self.ours.sendall(data)

    def abort(self) -> None:
        try:
            self.ours.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stream_closed(self, stream: Stream) -> None:
        pass

    def read(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            while b"\n" not in self.buf:
                self.buf += self.theirs.recv(65536)
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(json.loads(line))
        return out

    def close(self) -> None:
        self.outbox.close()
        self.abort()
        self.outbox.join(5.0)
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**kw: Any) -> Client:
        c = Client(**kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def hub(path: Path, store: Any) -> Iterator[FollowHub]:
    store([])
    h = FollowHub(str(path))
    yield h
    h.close()


def limits(max_lag: int = 100_000, timeout_s: float = 5.0) -> Callable[[], FollowLimits]:
    return lambda: FollowLimits(max_lag, timeout_s)


def entry_ids(msgs: list[dict[str, Any]]) -> list[int]:
    assert all(m["method"] == "logs.entry" for m in msgs), msgs
    return [m["params"]["id"] for m in msgs]


def test_follower_reads_on_from_its_cursor_in_pages(store: Any, hub: FollowHub, clients: Any) -> None:
    c = clients()
    hub.add(Follower(Filters(idents=("kernel",)), c.stream(), 3, limits()))
    hub.publish(store([row(f"m{i}", ident="kernel" if i % 2 else "init") for i in range(10)]))
    assert entry_ids(c.read(4)) == [4, 6, 8, 10]
    last = store([row("late", ident="kernel") for _ in range(3 * PAGE + 5)])  # more than a page at once
    hub.publish(last)
    assert entry_ids(c.read(3 * PAGE + 5)) == list(range(11, last + 1))
    hub.publish(store([row("one more", ident="kernel")]))
    (msg,) = c.read(1)
    assert msg["params"]["message"] == "one more" and msg["params"]["id"] == last + 1


def test_follower_grep_and_the_entry_shape(store: Any, hub: FollowHub, clients: Any, reader: Reader) -> None:
    c = clients()
    hub.add(Follower(Filters(grep="disk (full|error)"), c.stream(), 0, limits()))
    hub.publish(store([row("Disk FULL"), row("fine"), row("disk error")]))
    msgs = c.read(2)
    assert [m["params"] for m in msgs] == [reader.query(Filters(grep="disk"))[0], reader.query(Filters())[2]]


@pytest.mark.parametrize("grep", [None, "^kernel"])
def test_follower_too_far_behind_skips_and_says_how_much(
    store: Any, hub: FollowHub, clients: Any, grep: str | None
) -> None:
    c = clients()
    messages = [f"kernel {i}" if i % 2 else f"init {i}" for i in range(100)]
    last = store([row(m, ident=m.split()[0]) for m in messages])
    f = Filters(idents=("kernel",)) if grep is None else Filters(grep=grep)
    hub.add(Follower(f, c.stream(), 0, limits(max_lag=20)))
    hub.publish(last)
    lagged, *rest = c.read(11)
    assert lagged == {"jsonrpc": "2.0", "method": "lagged", "params": {"stream": "logs.follow", "missed": 40}}
    assert entry_ids(rest) == list(range(82, 101, 2))  # the kernel entries among the newest 20 ids


def test_stalled_follower_costs_nothing_and_resumes_where_it_stopped(store: Any, hub: FollowHub, clients: Any) -> None:
    stalled, other = clients(queue=8), clients()
    hub.add(Follower(Filters(), stalled.stream(), 0, limits()))
    hub.add(Follower(Filters(), other.stream(), 0, limits()))
    payload = "p" * 2000
    last = store([row(f"{i} {payload}") for i in range(300)])
    hub.publish(last)
    assert entry_ids(other.read(300)) == list(range(1, 301))  # the other one is not held up
    wait_for(lambda: stalled.outbox.queued_bytes > 0 and stalled.outbox.dropped == 0, 5, "the stalled queue")
    got = entry_ids(stalled.read(300))  # it reads at last: everything, in order, nothing dropped
    assert got == list(range(1, 301)) and stalled.outbox.dropped == 0


def test_all_followers_share_one_thread(store: Any, hub: FollowHub, clients: Any) -> None:
    c = clients(queue=100_000)
    before = threading.active_count()
    for _ in range(300):
        hub.add(Follower(Filters(), c.stream(), 0, limits()))
    assert threading.active_count() == before + 1  # the hub's thread
    hub.publish(store([row("to everyone")]))
    assert entry_ids(c.read(300)) == [1] * 300


def test_a_costly_follower_does_not_hold_up_the_others(big: int, hub: FollowHub, clients: Any, store: Any) -> None:
    slow, quick = clients(), clients()
    slow_one = Follower(Filters(grep="(a+)+$"), slow.stream(), 0, limits(max_lag=10**9))
    hub.add(slow_one)
    hub.add(Follower(Filters(), quick.stream(), big, limits()))
    last = store([row("b!")])
    hub.publish(last)
    assert entry_ids(quick.read(1)) == [last]
    assert slow_one.cursor < big  # still working through 200,000 entries, a slice at a time
    wait_for(lambda: slow_one.cursor == last, 60, "the slow follower to reach the head")


def test_a_follower_timeout_setting_bounds_each_turn(big: int, hub: FollowHub, clients: Any) -> None:
    c = clients()
    f = Follower(Filters(pid=4242), c.stream(), 0, limits(max_lag=10**9, timeout_s=0.001))
    hub.add(f)
    hub.publish(big)
    wait_for(lambda: f.cursor == big, 60, "a scan made of many short turns")
