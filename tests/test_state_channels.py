"""Message channels against a real ipcd: fan-out, real processes, unsubscribe, slow readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conftest import Conn, Ipcd, reap, wait_for

from ipcd.client import Client


def publish(c: Conn, channel: str, message: Any) -> int:
    reply = c.call("publish", {"channel": channel, "message": message})
    return reply["delivered"]  # type: ignore[no-any-return]


ECHO = """
import sys
from ipcd.client import Client
with Client(sys.argv[1]) as c:           # one connection: subscribed, and publishing
    messages = c.subscribe(["to-echo"])
    print("ready", flush=True)
    for msg in messages:
        if msg["message"] == "stop":
            break
        c.publish("to-asker", {"echo": msg["message"], "asker_pid": msg["pid"]})
"""

ASKER = """
import json, sys
from ipcd.client import Client
with Client(sys.argv[1]) as c:
    replies = c.subscribe("to-asker")
    got = []
    for i in range(int(sys.argv[2])):
        reached = c.publish("to-echo", i)
        msg = next(replies)
        got.append({"reached": reached, "echo": msg["message"]["echo"], "asker_pid": msg["message"]["asker_pid"],
                    "from_pid": msg["pid"], "from_uid": msg["uid"], "channel": msg["channel"]})
    c.publish("to-echo", "stop")
print(json.dumps(got))
"""


def test_two_processes_exchange_messages(ipcd: Ipcd) -> None:
    rounds = 25
    echo = subprocess.Popen([sys.executable, "-c", ECHO, ipcd.sock], stdout=subprocess.PIPE, text=True)
    procs = [echo]
    try:
        assert echo.stdout is not None and echo.stdout.readline() == "ready\n"
        asker = subprocess.Popen(
            [sys.executable, "-c", ASKER, ipcd.sock, str(rounds)], stdout=subprocess.PIPE, text=True
        )
        procs.append(asker)
        out, _ = asker.communicate(timeout=30)
        assert asker.returncode == 0
        assert echo.wait(10) == 0
    finally:
        reap(procs)
    got = json.loads(out)
    assert got == [
        {
            "reached": 1,
            "echo": i,
            "asker_pid": asker.pid,
            "from_pid": echo.pid,
            "from_uid": os.getuid(),
            "channel": "to-asker",
        }
        for i in range(rounds)
    ]
    st = ipcd.call("status")["channels"]
    assert st["published"] == 2 * rounds + 1 and st["subscribers"] == 0


def test_publish_reaches_each_subscriber_with_the_sender(ipcd: Ipcd) -> None:
    with ipcd.conn() as s1, ipcd.conn() as s2, ipcd.conn() as s3, ipcd.conn() as p:
        assert publish(p, "news", "nobody listens") == 0
        assert s1.call("subscribe", {"channels": ["news"]}) == {"channels": ["news"]}
        assert s2.call("subscribe", {"channels": ["sports", "news"]}) == {"channels": ["news", "sports"]}
        assert s3.call("subscribe", {"channels": ["sports"]}) == {"channels": ["sports"]}
        assert p.call("status")["channels"]["subscribers"] == 3
        t0 = time.time()
        assert publish(p, "news", {"headline": "ipcd ships", "tags": ["a"]}) == 2
        t1 = time.time()
        for s in (s1, s2):
            note = s.recv_json()
            assert note["method"] == "message" and "id" not in note
            params = note["params"]
            assert t0 <= params.pop("published_at") <= t1
            assert params == {
                "channel": "news",
                "message": {"headline": "ipcd ships", "tags": ["a"]},
                "uid": os.getuid(),
                "pid": os.getpid(),
            }
        assert publish(p, "sports", 3) == 2
        assert publish(p, "news", "marker") == 2
        assert s1.recv_json()["params"]["message"] == "marker"  # s1 never saw "sports"
        assert [s2.recv_json()["params"]["message"] for _ in range(2)] == [3, "marker"]
        assert s3.recv_json()["params"]["message"] == 3


def test_unsubscribe_on_the_same_connection(ipcd: Ipcd) -> None:
    with ipcd.conn() as s, ipcd.conn() as p:
        s.call("subscribe", {"channels": ["a", "b", "c"]})
        assert s.call("unsubscribe", {"channels": ["a", "zzz"]}) == {"channels": ["a"]}
        assert publish(p, "a", 1) == 0
        assert publish(p, "b", 2) == 1
        note = s.recv_json()
        assert (note["params"]["channel"], note["params"]["message"]) == ("b", 2)
        assert s.call("unsubscribe") == {"channels": ["b", "c"]}  # no channels: all of them
        assert publish(p, "b", 3) == 0 and publish(p, "c", 3) == 0
        st = p.call("status")["channels"]
        assert st["subscribers"] == 0 and st["channels"] == 0
        assert s.call("ping")["pong"]  # the next line is the reply: nothing else came
        assert s.call("unsubscribe") == {"channels": []}
        assert s.call("subscribe", {"channels": ["a"]}) == {"channels": ["a"]}  # and again
        assert publish(p, "a", 4) == 1
        assert s.recv_json()["params"]["message"] == 4
        for bad in ([], [""], ["x" * 257], ["a\nb"], "a", [1]):
            assert s.call("subscribe", {"channels": bad})["code"] == -32602, bad
        assert p.call("publish", {"channel": "", "message": 1})["code"] == -32602
        assert s.call("subscribe", {"channels": ["é" * 256]}) == {"channels": ["a", "é" * 256]}  # at the edge
        assert publish(p, "é" * 256, 5) == 1
        err = p.call("publish", {"channel": "é" * 257, "message": 1})
        assert err["code"] == -32602 and err["data"] == {"param": "channel"}, err


def test_channels_lists_at_most_1000(ipcd: Ipcd) -> None:
    names = [f"c{i:04d}" for i in range(1001)]
    conns = [ipcd.conn() for _ in range(5)]  # 256 streams each at most: a channel counts one
    try:
        for k, c in enumerate(conns):
            assert c.call("subscribe", {"channels": names[k * 250 : (k + 1) * 250]})["channels"]
        assert ipcd.call("status")["channels"]["channels"] == 1001
        assert ipcd.call("channels")["channels"] == names[:1000]  # the first 1000, sorted
        assert ipcd.call("channels", {"prefix": "c1"})["channels"] == ["c1000"]
    finally:
        for c in conns:
            c.close()


SUBSCRIBER = """
import sys, time
from ipcd.client import Client
with Client(sys.argv[1]) as c:
    c.subscribe(sys.argv[2:])
    print("ready", flush=True)
    sys.stdin.readline()  # until killed
"""


def test_a_closed_connections_subscriptions_vanish_at_once(ipcd: Ipcd) -> None:
    with ipcd.conn() as p:
        s = ipcd.conn()
        s.call("subscribe", {"channels": ["x", "y"]})
        assert publish(p, "x", 1) == 1
        assert p.call("status")["channels"]["subscribers"] == 1
        s.close()
        wait_for(lambda: publish(p, "x", 2) == 0, 1.0, "publish to find no subscriber after the close")
        st = p.call("status")["channels"]
        assert st["subscribers"] == 0 and st["channels"] == 0
        # A process killed with SIGKILL: the kernel closes its socket, ipcd drops it.
        proc = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, ipcd.sock, "x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            assert publish(p, "x", 3) == 1
            proc.kill()
            proc.wait()
            wait_for(lambda: publish(p, "x", 4) == 0, 1.0, "the killed subscriber to vanish")
        finally:
            reap([proc])
        assert p.call("status")["channels"]["subscribers"] == 0


FAST_READER = """
import json, socket, sys
n = int(sys.argv[2])
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, s.makefile("rb") as f:
    s.connect(sys.argv[1])
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"channels":["load"]}}\\n')
    f.readline()
    print("ready", flush=True)  # subscribed: the reply is in
    for _ in range(n):  # then each message as it comes, said at once
        m = json.loads(f.readline())
        print(m["params"]["message"]["i"] if m["method"] == "message" else json.dumps(m), flush=True)
"""


def test_a_stalled_subscriber_is_told_it_lagged_and_slows_no_one(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nstream_queue = 64\n").start()
    # Enough to fill the stalled reader's socket buffer several times over.
    try:
        wmem = int(Path("/proc/sys/net/core/wmem_default").read_text())
    except OSError:
        wmem = 212992
    size = 256
    n = max(2000, 4 * wmem // size)
    pad = "x" * size

    stalled = d.conn()
    fast = subprocess.Popen([sys.executable, "-c", FAST_READER, d.sock, str(n)], stdout=subprocess.PIPE, text=True)
    try:
        assert stalled.call("subscribe", {"channels": ["load"]}) == {"channels": ["load"]}
        # From here on the stalled reader reads nothing until every publish returned.
        assert fast.stdout is not None and fast.stdout.readline() == "ready\n"
        delivered, took = [], []
        with Client(d.sock) as pub:
            t_all = time.monotonic()
            fast_got = []
            for i in range(n):
                t0 = time.monotonic()
                delivered.append(pub.publish("load", {"i": i, "pad": pad}))
                took.append(time.monotonic() - t0)
                # The fast subscriber keeps up (it says each message before the next is sent),
                # so only the stalled one can fall behind, however loaded this machine is.
                fast_got.append(fast.stdout.readline().strip())
            t_all = time.monotonic() - t_all
            # The fast subscriber got everything, in order, with no gap.
            assert fast_got == [str(i) for i in range(n)]
            # Publishing never waited for the stalled reader.
            assert max(took) < 0.5 and t_all < 20, (max(took), t_all)
            st = pub.call("status")["channels"]

        # Now the stalled reader reads: what fit, then one notice for the rest.
        got: list[int] = []
        notices = []
        while len(got) + sum(x["missed"] for x in notices) < n:
            note = stalled.recv_json()
            if note["method"] == "lagged":
                notices.append(note["params"])
            else:
                assert note["method"] == "message"
                got.append(note["params"]["message"]["i"])
        kept = len(got)
        assert 0 < kept < n
        assert got == list(range(kept))
        assert notices == [{"stream": "subscribe", "missed": n - kept}]
        assert sum(delivered) == n + kept  # the fast one each time, the stalled one while it had room
        assert delivered[:kept] == [2] * kept and set(delivered[kept:]) == {1}
        assert st["lagged"] == n - kept
        # Caught up, it receives again.
        with Client(d.sock) as pub:
            assert pub.publish("load", {"i": n}) == 1
        assert stalled.recv_json()["params"]["message"]["i"] == n
    finally:
        stalled.close()
        reap([fast])


def test_concurrent_publishers_each_arrive_whole_and_in_order(make_ipcd) -> None:
    # Lines of a few KiB from 4 publishers at once: while the subscriber does not read, they go
    # straight into its socket, then half of one does and its rest waits in the outbox, then the rest
    # queue behind it; once it reads again, new ones go straight in again. Nothing is lost, reordered,
    # or cut; the queue (2048 lines) holds all of them.
    d: Ipcd = make_ipcd("[control]\nstream_queue = 2048\n").start()
    per, publishers = 150, 4
    pad = "p" * 3000

    def run(k: int, start: int) -> list[int]:
        with Client(d.sock) as pub:
            return [pub.publish("order", {"k": k, "i": i, "pad": pad}) for i in range(start, start + per)]

    def read(sub: Conn, count: int) -> dict[int, list[int]]:
        seen: dict[int, list[int]] = {k: [] for k in range(publishers)}
        for _ in range(count):
            note = sub.recv_json()
            assert note["method"] == "message", note
            m = note["params"]["message"]
            assert m["pad"] == pad
            seen[m["k"]].append(m["i"])
        return seen

    with d.conn() as sub:
        assert sub.call("subscribe", {"channels": ["order"]}) == {"channels": ["order"]}
        with ThreadPoolExecutor(publishers) as pool:
            # The subscriber reads nothing until every publish has been answered.
            assert [sum(f.result()) for f in [pool.submit(run, k, 0) for k in range(publishers)]] == [per] * 4
            assert read(sub, per * publishers) == {k: list(range(per)) for k in range(publishers)}
            # Now it reads while they publish.
            futures = [pool.submit(run, k, per) for k in range(publishers)]
            assert read(sub, per * publishers) == {k: list(range(per, 2 * per)) for k in range(publishers)}
            assert [sum(f.result()) for f in futures] == [per] * 4
    st = d.call("status")["channels"]
    assert st["lagged"] == 0 and st["delivered"] == 2 * per * publishers
