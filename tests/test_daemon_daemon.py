"""`ipcd.daemon.daemon`: the stop order: a signal stops ipcd cleanly, after the requests already sent."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

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


def test_malloc_arenas_limit_applies_on_glibc_and_0_leaves_the_default() -> None:
    import platform

    from ipcd.daemon.daemon import limit_malloc_arenas

    assert limit_malloc_arenas(0) is False  # the key's "glibc's default": no call at all
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("needs glibc's mallopt (this libc is not glibc)")
    assert limit_malloc_arenas(2) is True  # the test process takes the daemon's default too


def test_malloc_arenas_is_a_daemon_key_with_its_range(tmp_path: Path) -> None:
    from ipcd import config
    from ipcd.errors import ConfigError

    assert config.Config().daemon.malloc_arenas == 2
    path = tmp_path / "ipcd.toml"
    path.write_text("[daemon]\nmalloc_arenas = 0\n")
    assert config.load(path).daemon.malloc_arenas == 0
    path.write_text("[daemon]\nmalloc_arenas = -1\n")
    with pytest.raises(ConfigError, match="malloc_arenas"):
        config.load(path)
