"""`ipcd.logs.ratelimit`: the per-sender rate limit, with an injected clock, then in a real ipcd.

`RateLimiter.check(..., now)` takes the time from the test.  Against a real
daemon, the one paced sleep (waiting out a rate-limit window) says so.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Ipcd, needs_program, wait_for
from helpers_logs import MY_COMM, MY_PID, query, run, send, status, wait_stored

from ipcd.logs.ratelimit import RateLimiter


def run_limiter(rl: RateLimiter, key: Any, prios: list[int], now: float) -> list[tuple[bool, int]]:
    return [rl.check(key, p, now) for p in prios]


def test_rate_limit_burst_passes_and_the_next_is_suppressed() -> None:
    rl = RateLimiter(burst=3, interval_s=10.0)
    assert run_limiter(rl, "k", [5, 5, 5], 100.0) == [(True, 0)] * 3
    assert rl.check("k", 5, 100.5) == (False, 0)
    assert rl.check("k", 6, 109.99) == (False, 0)
    assert rl.suppressed_total == 2
    # The window ends at 110: the next message passes and reports the 2 once.
    assert rl.check("k", 5, 110.0) == (True, 2)
    assert run_limiter(rl, "k", [5, 5, 5], 110.0) == [(True, 0), (True, 0), (False, 0)]
    assert rl.check("k", 5, 125.0) == (True, 1)
    assert rl.suppressed_total == 3


def test_rate_limit_crit_and_above_have_a_bucket_of_their_own_four_times_the_burst() -> None:
    rl = RateLimiter(burst=2, interval_s=10.0)
    assert run_limiter(rl, "k", [5, 5, 3], 0.0) == [(True, 0), (True, 0), (False, 0)]
    # The others' burst is spent: crit and above still pass, up to 4 x 2 of them ...
    assert run_limiter(rl, "k", [2, 1, 0, 2, 2, 2, 1, 0], 1.0) == [(True, 0)] * 8
    # ... and a flood of "emergencies" is limited too.
    assert run_limiter(rl, "k", [0, 2], 1.5) == [(False, 0), (False, 0)]
    assert rl.check("k", 4, 2.0) == (False, 0)
    assert rl.check("k", 2, 10.0) == (True, 4)  # a crit message also brings the report


def test_rate_limit_chatter_never_uses_up_the_crit_bucket() -> None:
    rl = RateLimiter(burst=3, interval_s=10.0)
    assert sum(ok for ok, _ in run_limiter(rl, "k", [6] * 1000, 0.0)) == 3
    assert run_limiter(rl, "k", [2] * 12, 0.5) == [(True, 0)] * 12


def test_rate_limit_crit_opening_a_window_takes_no_share_of_the_burst() -> None:
    rl = RateLimiter(burst=2, interval_s=10.0)
    assert run_limiter(rl, "k", [2, 5, 5, 5], 0.0) == [(True, 0), (True, 0), (True, 0), (False, 0)]


def test_rate_limit_is_per_key() -> None:
    rl = RateLimiter(burst=1, interval_s=10.0)
    assert [rl.check(k, 5, 0.0) for k in ("a", "b", (0, "x"), (0, "y"), "a", "b")] == [
        (True, 0),
        (True, 0),
        (True, 0),
        (True, 0),
        (False, 0),
        (False, 0),
    ]
    assert len(rl) == 4


def test_rate_limit_windows_are_bounded_and_new_senders_fall_back_to_their_uids() -> None:
    # A user who makes up a new command name (or unit) per process made a window each, without end.
    rl = RateLimiter(burst=1, interval_s=10.0, max_windows=3)
    for comm in ("a", "b", "c"):
        key = rl.key_for((1000, comm), "uid 1000")
        assert key == (1000, comm) and rl.check(key, 5, 0.0) == (True, 0)
    assert rl.key_for((1000, "a"), "uid 1000") == (1000, "a")  # a sender with a window keeps it
    assert rl.key_for((1000, "d"), "uid 1000") == "uid 1000"  # the table is full: the uid's window
    assert [rl.check(rl.key_for((1000, f"n{i}"), "uid 1000"), 5, 1.0) for i in range(3)] == [
        (True, 0),
        (False, 0),
        (False, 0),
    ]
    assert len(rl) == 4  # the bound, and the one fallback window past it
    rl.sweep(20.0)
    assert len(rl) == 0 and rl.key_for((1000, "d"), "uid 1000") == (1000, "d")


def test_rate_limit_sweep_reports_ended_windows_once() -> None:
    rl = RateLimiter(burst=1, interval_s=10.0)
    run_limiter(rl, "quiet", [5], 0.0)
    run_limiter(rl, "loud", [5, 5, 5, 5], 0.0)
    run_limiter(rl, "late", [5, 5], 5.0)
    assert rl.sweep(9.99) == []
    assert rl.sweep(10.0) == [("loud", 3)]  # "quiet" is forgotten without a report
    assert len(rl) == 1
    assert rl.sweep(10.0) == []
    assert rl.check("loud", 5, 10.0) == (True, 0)  # already reported: not twice
    assert rl.sweep(15.0) == [("late", 1)]


def test_rate_limit_clock_going_back_starts_a_new_window() -> None:
    rl = RateLimiter(burst=1, interval_s=10.0)
    run_limiter(rl, "k", [5, 5], 100.0)
    assert rl.check("k", 5, 50.0) == (True, 1)


def test_rate_limit_burst_0_is_off_and_configure_applies() -> None:
    rl = RateLimiter(burst=0, interval_s=10.0)
    assert run_limiter(rl, "k", [7] * 1000, 0.0) == [(True, 0)] * 1000
    assert len(rl) == 0
    rl.configure(2, 1.0)
    assert run_limiter(rl, "k", [7, 7, 7], 0.0) == [(True, 0), (True, 0), (False, 0)]
    assert rl.check("k", 7, 1.0) == (True, 1)  # the new interval


# --- against a real ipcd --------------------------------------------------------------------------


SEND_ONE = (
    "import socket, sys; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(sys.argv[2].encode(), sys.argv[1])"
)


def test_max_senders_at_its_edge_and_the_senders_past_it_share_their_uids_window(
    make_ipcd: Callable[..., Ipcd], short_tmp: Path
) -> None:
    """16 commands (the least max_senders) get a window each; the 17th shares its uid's, and status says so."""
    d = make_ipcd(config="[log]\nmax_senders = 16\n").start()
    for i in range(17):  # a command name of its own each: a link to the interpreter, named for it
        exe = short_tmp / f"sender-{i:02d}"
        exe.symlink_to(sys.executable)
        assert (
            subprocess.run([str(exe), "-S", "-c", SEND_ONE, d.log_sock, f"<13>s: from {i}"], timeout=30).returncode == 0
        )
        st = wait_stored(d, i + 1)["logs"]
        assert (st["senders"], st["senders_shared"]) == ((i + 1, 0) if i < 16 else (17, 1))  # 16 own, 1 shared, (i, st)
    assert {e["sender_comm"] for e in query(d, limit=100)} == {f"sender-{i:02d}" for i in range(17)}


@needs_program("logger")
def test_rate_limit_at_its_edge(make_ipcd: Callable[..., Ipcd]) -> None:
    interval_s = 0.5
    d = make_ipcd(config=f"[log]\nrate_limit_burst = 3\nrate_limit_interval_s = {interval_s}\n").start()
    log_pid = status(d)["log_process"]["pid"]  # the log process writes ipcd's own entries
    who = f"{MY_COMM}[{MY_PID}]"
    # Another sender (another command) has a budget of its own.
    run(["logger", "-u", d.log_sock, "-t", "rl", "w1 from logger"])
    wait_stored(d, 1)
    # Window 1: three pass, the fourth and fifth do not; crit and above always pass.
    send(
        d,
        *[b"<13>rl: w1 n%d" % i for i in range(5)],
        b"<10>rl: w1 crit",
        b"<9>rl: w1 alert",
        b"<8>rl: w1 emerg",
        b"<11>rl: w1 err",
    )
    wait_for(lambda: query(d, ident="ipcd"), 10, "the suppressed report of window 1")
    entries = query(d)
    assert [(e["ident"], e["message"]) for e in entries] == [
        ("rl", "w1 from logger"),
        ("rl", "w1 n0"),
        ("rl", "w1 n1"),
        ("rl", "w1 n2"),
        ("rl", "w1 crit"),
        ("rl", "w1 alert"),
        ("rl", "w1 emerg"),
        ("ipcd", f"suppressed 3 messages from {who}"),
    ]
    report = entries[-1]
    got = (report["priority"], report["facility"], report["fields"], report["sender_pid"])
    assert got == (4, 5, {"suppressed": 3, "sender": who}, log_pid)  # warning, syslog, from ipcd itself
    assert report["sender_comm"] == "ipcd-log"
    logs = status(d)["logs"]
    assert (logs["received"], logs["rate_limited"], logs["stored"]) == (10, 3, 8)

    # Window 2: one over the burst; the next message after the window brings the report.
    send(d, *[b"<13>rl: w2 n%d" % i for i in range(4)])
    wait_stored(d, 11)
    time.sleep(interval_s)  # paced: wait out the rate-limit window (no condition to poll for)
    send(d, b"<13>rl: after w2")
    wait_for(lambda: query(d, grep="after w2"), 10, "the first message of window 3")
    tail = [(e["ident"], e["message"]) for e in query(d, after_id=8)]
    assert tail == [
        ("rl", "w2 n0"),
        ("rl", "w2 n1"),
        ("rl", "w2 n2"),
        ("ipcd", f"suppressed 1 messages from {who}"),
        ("rl", "after w2"),
    ]
    logs = status(d)["logs"]
    assert (logs["received"], logs["rate_limited"], logs["stored"]) == (15, 4, 13)
    assert len(query(d, ident="ipcd")) == 2  # one report per window, never twice


def test_suppressed_count_is_stored_at_stop(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[log]\nrate_limit_burst = 2\nrate_limit_interval_s = 3600\n").start()
    send(d, *[b"<13>chatty: %d" % i for i in range(7)])
    wait_for(lambda: d.call("status")["logs"]["rate_limited"] == 5, 10, "five messages suppressed")
    assert d.stop() == 0  # the window is still open: the report comes with the stop
    d.start()
    msgs = [e["message"] for e in query(d)]
    assert msgs[:2] == ["0", "1"]  # ident "chatty"
    assert len(msgs) == 3 and msgs[2].startswith("suppressed 5 messages from ")
