"""ConnectionThreads: a thread per connection while it lasts, kept for the next one."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import wait_for

from ipcd.control.threads import ConnectionThreads


class Served:
    """A serve() whose calls block until released, and which records the thread of each."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.by: dict[Any, int] = {}  # request -> the thread ident that served it
        self.running = 0

    def __call__(self, request: Any, address: Any) -> None:
        with self.lock:
            self.running += 1
        try:
            self.release.wait(10)
            with self.lock:
                self.by[request] = threading.get_ident()
        finally:
            with self.lock:
                self.running -= 1


def test_each_connection_has_a_thread_while_it_lasts_and_the_threads_are_kept_for_the_next() -> None:
    served = Served()
    threads = ConnectionThreads(served, "test-conn")
    for i in range(20):
        threads.submit(i, None)
    wait_for(lambda: served.running == 20, 10, "20 connections served at once")
    assert threads.counts == (20, 0)
    served.release.set()
    wait_for(lambda: threads.counts == (20, 20), 10, "the 20 threads free")
    first = set(served.by.values())
    for i in range(20, 40):
        threads.submit(i, None)
    wait_for(lambda: len(served.by) == 40, 10, "20 more connections served")
    assert threads.counts[0] == 20  # no thread was started for them
    assert {served.by[i] for i in range(20, 40)} <= first
    assert threads.close(10)
    assert threads.counts[0] == 0


def test_a_thread_that_waits_keep_s_for_a_connection_ends() -> None:
    served = Served()
    served.release.set()
    threads = ConnectionThreads(served, "test-conn", keep_s=0.1)
    for i in range(3):
        threads.submit(i, None)
    wait_for(lambda: threads.counts == (0, 0), 10, "the threads to end once idle for keep_s")
    threads.submit(3, None)  # a new thread for the next
    wait_for(lambda: 3 in served.by, 10, "the next connection served")
    assert threads.close(10)


def test_close_waits_at_most_its_timeout_for_a_connection_still_served() -> None:
    served = Served()
    threads = ConnectionThreads(served, "test-conn")
    threads.submit("a", None)
    threads.submit("b", None)
    wait_for(lambda: served.running == 2, 10, "both served")
    assert not threads.close(0.2)  # they are still being served
    served.release.set()
    wait_for(lambda: threads.counts[0] == 0, 10, "both threads to end once done")
    with pytest.raises(RuntimeError, match="closed"):
        threads.submit("late", None)
