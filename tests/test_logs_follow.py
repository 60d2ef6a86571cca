"""`ipcd.logs.follow`, without a daemon: followers in pages, lagging, stalled, sharing one thread.

The store is written by the real `Writer` (`helpers_reader`); followers write
through a real `Outbox` to one end of a socketpair, and the test reads the
other end, as a client would.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from helpers_reader import big, path, reader, row, store

from ipcd.control.access import Peer
from ipcd.control.connection import ClientConnection
from ipcd.control.streams import Outbox, Stream
from ipcd.logs.filters import Filters
from ipcd.logs.follow import PAGE, Follower, FollowHub, FollowLimits
from ipcd.logs.query import Reader

__all__ = ["big", "path", "reader", "store"]  # the helpers' fixtures (the tests here use them, or their fixtures do)


class Client(ClientConnection):
    """A real connection and Outbox writing to one end of a socketpair; the test reads the other, as a client."""

    def __init__(self, queue: int = 1024, max_bytes: int = 8 << 20) -> None:
        ours, self.theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.theirs.settimeout(10.0)
        super().__init__(ours, Peer(os.getpid(), os.getuid(), os.getgid(), role="admin"), None)  # type: ignore[arg-type]
        self.outbox = Outbox(self, queue, max_bytes)
        self.buf = b""

    def stream(self) -> Stream:
        return Stream(self, "logs.follow")

    def read(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            while b"\n" not in self.buf:
                self.buf += self.theirs.recv(65536)
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(json.loads(line))
        return out

    def close(self) -> None:
        super().close()
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

    def hubs() -> int:
        return [t.name for t in threading.enumerate()].count("ipcd-follow")

    before, hubs_before = threading.active_count(), hubs()
    for _ in range(300):
        hub.add(Follower(Filters(), c.stream(), 0, limits()))
    # The hub's one thread. Not == for the total: a thread of an earlier test may end meanwhile.
    assert hubs() == hubs_before + 1
    assert threading.active_count() <= before + 1
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
