"""`ipcd.ctl.streaming`: `logs -f`, `subscribe` and `kv watch` taken across a real restart of the daemon.

A stream that once ran reconnects and resumes; a first connection that fails
is exit 3, not a retry.  Resuming `logs -f` needs `after_id` on `logs.follow`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Ipcd, ipcctl, wait_for
from helpers_ctl import streaming
from helpers_logs import NO_LIMIT, send, wait_stored


def restart(d: Ipcd) -> None:
    assert d.stop() == 0
    d.start()


def test_follow_resumes_across_a_restart_with_no_gap_and_no_duplicate(make_ipcd: Callable[..., Ipcd]) -> None:
    """Needs `after_id` on logs.follow (the daemon's)."""
    d = make_ipcd(config=NO_LIMIT).start()
    send(d, b"<13>r: 0", b"<13>other: skip", b"<13>r: 1")
    wait_stored(d, 3)
    with streaming("--socket", d.sock, "logs", "-f", "-t", "r", "-o", "cat") as s:
        assert [s.out.next(), s.out.next()] == ["0", "1"]
        send(d, b"<13>r: 2")
        assert s.out.next() == "2"
        assert d.stop() == 0
        assert "lost the connection to ipcd" in s.err.next()
        d.start()
        send(d, *[b"<13>r: %d" % i for i in range(3, 8)])  # maybe before it reconnects: none may be lost
        lines = s.err.until(lambda line: "reconnected" in line)
        assert "cannot resume" not in "".join(lines), lines
        send(d, b"<13>other: skip", b"<13>r: 8")
        assert [s.out.next() for _ in range(6)] == [str(i) for i in range(3, 9)]
        restart(d)  # and once more, with nothing new in between
        s.err.until(lambda line: "reconnected" in line)
        send(d, b"<13>r: 9")
        assert s.out.next() == "9"  # not 8 again


def test_subscribe_and_kv_watch_survive_a_restart(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd().start()
    with (
        streaming("--socket", d.sock, "subscribe", "news") as sub,
        streaming("--socket", d.sock, "kv", "watch", "app/") as watch,
    ):
        wait_for(lambda: d.call("publish", {"channel": "news", "message": "one"})["delivered"] == 1, 10, "subscribed")
        assert sub.out.next() == "news: one"
        wait_for(lambda: d.call("status")["kv"]["watchers"] == 1, 10, "the watch")
        d.call("kv.set", {"key": "app/a", "value": 1})
        assert watch.out.next() == "set app/a = 1 (version 1)"
        restart(d)
        for s, gap in ((sub, "messages published while it was away are lost"), (watch, "changes made while")):
            lines = s.err.until(lambda line: "reconnected" in line)
            assert "lost the connection" in lines[0] and gap in lines[-1], lines
        assert d.call("publish", {"channel": "news", "message": "two"})["delivered"] == 1
        assert sub.out.next() == "news: two"
        d.call("kv.set", {"key": "app/b", "value": "x"})
        assert watch.out.next() == "set app/b = x (version 1)"


def test_first_connection_failing_is_exit_3_not_a_retry(short_tmp: Path) -> None:
    for args in (["logs", "-f"], ["subscribe", "x"], ["kv", "watch"]):
        res = ipcctl("--socket", str(short_tmp / "none.sock"), *args, timeout_s=10)
        assert res.returncode == 3, (args, res.stderr)
