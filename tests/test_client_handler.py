"""`ipcd.client.handler`: `LogHandler`, the logging handler, with a real ipcd and without one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from conftest import Ipcd, wait_for

from ipcd.client import Client, LogHandler


def test_log_handler_sends_records_with_their_extra_fields(ipcd: Ipcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPCD_SOCKET", ipcd.sock)
    handler = LogHandler(ident="handlertest")  # log.sock beside the control socket
    assert handler.path == ipcd.log_sock
    logger = logging.getLogger("tests.handler")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.warning("disk %s%% full", 91, extra={"job": "backup", "attempt": 2, "path": Path("/srv")})
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("it broke")
        logger.debug("details", extra={"nested": {"a": [1, None]}})
    finally:
        logger.removeHandler(handler)
        handler.close()
    with Client(ipcd.sock) as c:
        wait_for(lambda: len(c.logs(ident="handlertest")) == 3, 5, "the 3 records to be stored")
        entries = c.logs(ident="handlertest")
    warn, err, debug = entries
    assert (warn["message"], warn["priority"], warn["format"]) == ("disk 91% full", 4, "json")
    assert warn["fields"] == {"logger": "tests.handler", "job": "backup", "attempt": 2, "path": "/srv"}
    assert warn["pid"] == os.getpid() and warn["sender_pid"] == os.getpid()  # claimed and trusted
    assert err["priority"] == 3 and "Traceback" in err["message"] and "ZeroDivisionError" in err["message"]
    assert debug["priority"] == 7 and debug["fields"]["nested"] == {"a": [1, None]}


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_log_handler_never_raises_without_a_daemon(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("IPCD_SOCKET", "IPCD_RUNTIME_DIR", "IPCD_LOG_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))  # no daemon anywhere we look
    if os.path.exists("/run/ipcd/ipcd.sock"):
        pytest.skip("a system ipcd runs here")
    handler = LogHandler(ident="nodaemon")  # does not raise
    assert handler.path is None
    logger = _logger("tests.nodaemon", handler)
    for i in range(3):
        logger.error("lost %d", i)  # does not raise
    assert handler.dropped == 3
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 1  # the first of the run, not one per record
    handler.close()
    handler.close()  # twice, as logging.shutdown may: no error
    logging.shutdown([lambda: handler])  # type: ignore[list-item]


def test_log_handler_recovers_when_the_daemon_comes(make_ipcd, capsys: pytest.CaptureFixture[str]) -> None:
    d: Ipcd = make_ipcd()
    handler = LogHandler(d.log_sock, ident="late")
    logger = _logger("tests.late", handler)
    logger.warning("before")  # no daemon yet: dropped, reported once
    assert handler.dropped == 1 and "--- Logging error ---" in capsys.readouterr().err
    d.start()
    logger.warning("after")
    handler.close()
    with Client(d.sock) as c:
        wait_for(lambda: c.logs(ident="late"), 10, "the record sent once ipcd runs")
        assert [e["message"] for e in c.logs(ident="late")] == ["after"]
    assert handler.dropped == 1


def test_log_handler_loses_nothing_in_a_burst(ipcd: Ipcd) -> None:
    n = 5000
    handler = LogHandler(ipcd.log_sock, ident="burst")
    logger = _logger("tests.burst", handler)
    for i in range(n):
        logger.info("record %d", i)
    handler.close()
    assert handler.dropped == 0
    with Client(ipcd.sock) as c:
        wait_for(lambda: ipcd.call("status")["logs"]["stored"] >= n, 30, f"{n} records stored")
        got = [e["message"] for e in c.logs(ident="burst", limit=n)]
    assert got == [f"record {i}" for i in range(n)]


def test_log_handler_wait_is_bounded(short_tmp: Path) -> None:
    """A log socket nobody reads: each record waits at most timeout_s, then is counted as dropped."""
    import socket
    import time

    path = str(short_tmp / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as never_read:
        never_read.bind(path)
        handler = LogHandler(path, ident="full", timeout_s=0.05)
        logger = _logger("tests.full", handler)
        logging.raiseExceptions = False
        try:
            t0 = time.monotonic()
            while handler.dropped == 0 and time.monotonic() - t0 < 20:
                logger.info("x" * 1000)
            assert handler.dropped == 1  # the queue filled up, and the program went on
        finally:
            logging.raiseExceptions = True
            handler.close()
