"""`ipcd.daemon.daemon`: the stop order: a signal stops ipcd cleanly, after the requests already sent."""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import Ipcd


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(ipcd: Ipcd, sig: int) -> None:
    idle = ipcd.conn()  # a long-lived client must not hold up the stop
    try:
        assert idle.call("ping")["pong"]
        assert ipcd.stop(sig) == 0
        assert idle.at_eof()
    finally:
        idle.close()
    assert not os.path.exists(ipcd.sock)
    assert "stopped" in ipcd.stderr()


def test_stop_answers_requests_already_sent(ipcd: Ipcd) -> None:
    n = 2000
    with ipcd.conn(30.0) as c:
        c.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}).encode() + b"\n" for i in range(n)))
        ipcd.send_signal(signal.SIGTERM)
        got = []
        while line := c.readline():
            got.append(json.loads(line)["id"])
    assert got == list(range(n))
    assert ipcd.wait() == 0
