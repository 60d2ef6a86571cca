#!/usr/bin/env python3
"""ipcd from Python, with nothing but `ipcd.client`.

    python3 ipcd_example.py [SOCKET]

The socket is found as ipcctl finds it ($IPCD_SOCKET, $IPCD_RUNTIME_DIR,
/run/ipcd/ipcd.sock, the user instance's), unless given.  It shows the
status, shared key/value state (compare-and-set, a TTL), a publisher and a
subscriber in two threads, and logging through ipcd's log socket.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from ipcd.client import Client, Conflict, LogHandler, NotFound, resolve_log_socket


def kv_demo(c: Client) -> None:
    c.kv_set("example/greeting", "hello from Python")
    c.kv_set("example/session", {"user": "alice"}, ttl_s=60)  # gone in a minute
    print("greeting:", c.kv_get("example/greeting")["value"])

    # Compare-and-set: write only if nobody wrote since we read.
    item = c.kv_set("example/counter", 0)
    c.kv_set("example/counter", 1, if_version=item["version"])
    try:
        c.kv_set("example/counter", 100, if_version=item["version"])  # stale now
    except Conflict as e:
        print("conflict, as expected:", e.code, e.data)
    # kv_update retries the read-modify-write until no one came between.
    c.kv_update("example/counter", lambda n: (n or 0) + 1)
    print("counter:", c.kv_get("example/counter")["value"])
    print("keys:", c.kv_list("example/"))

    c.kv_delete("example/greeting")
    try:
        c.kv_get("example/greeting")
    except NotFound as e:
        print("deleted:", e.message)


def channel_demo(path: str | None) -> None:
    subscribed = threading.Event()
    received: list[str] = []

    def listen() -> None:
        with Client(path) as sub:  # one Client per thread
            messages = sub.subscribe(["example/chat"])
            subscribed.set()
            for msg in messages:
                if msg.get("lagged"):  # we fell behind: the daemon says how much we missed
                    print(f"missed {msg['missed']} messages")
                    continue
                received.append(msg["message"]["text"])
                if msg["message"].get("last"):
                    sub.unsubscribe()  # ends the iteration

    t = threading.Thread(target=listen)
    t.start()
    if not subscribed.wait(10):
        sys.exit("the subscriber did not start")
    with Client(path) as pub:
        for text in ("one", "two", "three"):
            reached = pub.publish("example/chat", {"text": text, "last": text == "three"})
            print(f"published {text!r} to {reached} subscriber(s)")
    t.join(10)
    print("subscriber got:", received)


def log_demo(path: str | None) -> None:
    log_path = resolve_log_socket(None, path) if path else None
    handler = LogHandler(log_path, ident="ipcd-example")
    log = logging.getLogger("ipcd-example")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("example finished", extra={"example_pid": os.getpid(), "step": "done"})
    handler.close()


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else None
    with Client(path) as c:
        st = c.status()
        print(f"ipcd {st['version']}, pid {st['pid']}, up {st['uptime_s']:.0f} s on {c.path}")
        kv_demo(c)
    channel_demo(path)
    log_demo(path)


if __name__ == "__main__":
    main()
