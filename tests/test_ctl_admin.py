"""`ipcd.ctl.admin`: `ipcctl status`, `ping`, `call`, `shutdown`, run as a real subprocess against a real ipcd."""

from __future__ import annotations

import json
import signal
import time

from conftest import Ipcd, ipcctl
from helpers_ctl import streaming


def test_status_human_and_json(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "status")
    assert res.returncode == 0, res.stderr
    assert f"pid {ipcd.proc.pid}" in res.stdout and ipcd.sock in res.stdout
    res = ipcctl("--socket", ipcd.sock, "--json", "status")
    doc = json.loads(res.stdout)
    assert doc["pid"] == ipcd.proc.pid and doc["sockets"]["control"] == ipcd.sock


def test_ping_count(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "ping", "-c", "3", "-i", "0")
    assert res.returncode == 0, res.stderr
    replies = [line for line in res.stdout.splitlines() if line.startswith("reply from")]
    assert [r.split("seq=")[1].split()[0] for r in replies] == ["1", "2", "3"]
    assert "3 requests, 3 replies, 0% loss" in res.stdout
    assert "rtt min/avg/max/mdev" in res.stdout
    doc = json.loads(ipcctl("--socket", ipcd.sock, "--json", "ping", "-c", "2", "-i", "0").stdout)
    assert doc["count"] == 2 and doc["rtt_ms"]["min"] <= doc["rtt_ms"]["max"]


def test_call_raw(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "call", "methods")
    assert res.returncode == 0
    assert "shutdown" in {m["name"] for m in json.loads(res.stdout)["methods"]}
    res = ipcctl("--socket", ipcd.sock, "call", "ping", "{}")
    assert json.loads(res.stdout)["pong"] is True


def test_shutdown(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "shutdown")
    assert res.returncode == 0 and str(ipcd.proc.pid) in res.stdout
    assert ipcd.wait() == 0


def test_ping_ctrl_c_prints_the_summary(ipcd: Ipcd) -> None:
    with streaming("--socket", ipcd.sock, "ping", "-c", "100000", "-i", "0.05") as s:
        assert s.out.next().startswith("PING ")
        s.out.until(lambda line: "seq=2 " in line)
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(10) == 0
        rest = s.proc.stdout.read().decode()  # type: ignore[union-attr]
        assert "ping statistics ---" in rest and " replies, 0% loss" in rest and "rtt min/avg/max/mdev" in rest


# --- what status shows ----------------------------------------------------------------------------


def test_status_renders_every_section_present_and_skips_the_absent(ipcd: Ipcd) -> None:
    from ipcd.ctl.admin import render_status

    live = ipcd.call("status")
    assert render_status(live)  # whatever this daemon has, it renders
    full = {
        **live,
        "config": "/etc/ipcd/ipcd.toml",
        "config_exists": False,
        "rates": {"messages_per_s": 12.5, "requests_per_s": 3.0},
        "memory": {"rss_bytes": 30 * 1024 * 1024, "log_process_rss_bytes": 20 * 1024 * 1024},
        "store": {**live["store"], "oldest": 1795000000.0, "error": "disk full\x1b[2J"},
        "logs": {**live["logs"], "followers": 2},
        "forward": [
            {
                "name": "central",
                "type": "syslog",
                "address": "tcp://logs:514",
                "state": "connected",
                "cursor": 41,
                "lag": 3,
                "sent": 40,
                "errors": 0,
                "last_error": None,
                "missed": 0,
            },
            {
                "name": "jd",
                "type": "journald",
                "address": "unix:///run/systemd/journal/socket",
                "state": "backing_off",
                "cursor": 0,
                "lag": 44,
                "sent": 0,
                "errors": 5,
                "last_error": "refused\x1b]0;x\x07",
                "missed": 0,
            },
        ],
    }
    text = "\n".join(render_status(full))
    assert "  config    /etc/ipcd/ipcd.toml (missing: defaults)" in text
    assert "  rates     12.5 messages/s, 3.0 requests/s" in text
    assert "  memory    30.0 MiB RSS, log process 20.0 MiB RSS" in text
    assert ", 2 followers" in text
    oldest = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1795000000.0))
    assert f"entries, oldest {oldest}" in text and "FAILING: disk full\\x1b[2J" in text
    assert "  forward   central  syslog tcp://logs:514: connected, cursor 41, lag 3, 40 sent, 0 errors" in text
    assert "            jd       journald unix:///run/systemd/journal/socket: backing off, cursor 0, lag 44" in text
    assert "last error: refused\\x1b]0;x\\x07" in text
    assert "\x1b" not in text
    sparse = {k: v for k, v in full.items() if k not in ("rates", "memory", "forward", "config")}
    text = "\n".join(render_status(sparse))
    assert "rates" not in text and "memory" not in text and "forward" not in text and "config " not in text
    assert "\n".join(render_status({**full, "config": None})).count("defaults (no config file)") == 1
