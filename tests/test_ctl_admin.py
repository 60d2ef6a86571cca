"""`ipcctl`, run as a real subprocess against a real ipcd: output and exit codes."""

from __future__ import annotations

import ast
import json
import os
import socket
import threading
import time
from pathlib import Path

import click
from conftest import IS_ROOT, ROOT, Ipcd, ipcctl, ipcctl_in_process, needs_root, run_as

from ipcd.ctl.cli import cli


def no_traceback(res) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def test_status_human_and_json(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "status")
    assert res.returncode == 0, res.stderr
    assert f"pid {ipcd.proc.pid}" in res.stdout and ipcd.sock in res.stdout
    res = ipcctl("--socket", ipcd.sock, "--json", "status")
    doc = json.loads(res.stdout)
    assert doc["pid"] == ipcd.proc.pid and doc["sockets"]["control"] == ipcd.sock


def test_socket_from_environment(ipcd: Ipcd) -> None:
    res = ipcctl("--json", "status", env={"IPCD_SOCKET": ipcd.sock})
    assert json.loads(res.stdout)["pid"] == ipcd.proc.pid
    res = ipcctl("--json", "status", env={"IPCD_RUNTIME_DIR": str(ipcd.run_dir)})
    assert json.loads(res.stdout)["pid"] == ipcd.proc.pid


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


def test_daemon_error_exits_1(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "call", "no.such.method")
    assert res.returncode == 1
    assert "-32601" in res.stderr and "method not found" in res.stderr
    res = ipcctl("--socket", ipcd.sock, "call", "ping", '{"bogus": 1}')
    assert res.returncode == 1 and "bogus" in res.stderr
    no_traceback(res)


def test_usage_errors_exit_2(ipcd: Ipcd) -> None:
    for args in (["call", "ping", "{not json"], ["call", "ping", "42"], ["ping", "-c", "0"], ["no-such-command"]):
        res = ipcctl("--socket", ipcd.sock, *args)
        assert res.returncode == 2, (args, res.stderr)
        no_traceback(res)


def test_unreachable_no_socket_exits_3(short_tmp) -> None:
    path = str(short_tmp / "none.sock")
    res = ipcctl("--socket", path, "status")
    assert res.returncode == 3
    assert path in res.stderr and "is ipcd running?" in res.stderr and "systemctl start ipcd" in res.stderr
    no_traceback(res)


def test_nothing_found_names_paths_tried(short_tmp) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPCD_")}
    env["XDG_RUNTIME_DIR"] = str(short_tmp)
    if os.path.exists("/run/ipcd/ipcd.sock"):
        return  # a system ipcd runs on this machine: resolution rightly finds it
    res = ipcctl("status", env=env)
    assert res.returncode == 3
    assert "/run/ipcd/ipcd.sock" in res.stderr
    if not IS_ROOT:
        assert str(short_tmp / "ipcd" / "ipcd.sock") in res.stderr


def test_stale_socket_exits_3(short_tmp) -> None:
    path = str(short_tmp / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    res = ipcctl("--socket", path, "ping")
    assert res.returncode == 3
    assert "stale socket" in res.stderr and "daemon is down" in res.stderr
    no_traceback(res)


def test_timeout_exits_3(short_tmp) -> None:
    path = str(short_tmp / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen()
        accepted = []
        t = threading.Thread(target=lambda: accepted.append(srv.accept()[0]))
        t.start()
        res = ipcctl("--socket", path, "--timeout", "0.3", "status")
        t.join(10)
        for c in accepted:
            c.close()
    assert res.returncode == 3
    assert "no answer" in res.stderr
    no_traceback(res)


def test_shutdown(ipcd: Ipcd) -> None:
    res = ipcctl("--socket", ipcd.sock, "shutdown")
    assert res.returncode == 0 and str(ipcd.proc.pid) in res.stdout
    assert ipcd.wait() == 0


@needs_root
def test_socket_permission_denied_exits_4(ipcd: Ipcd) -> None:
    # The control socket is 0600 root: uid 65534 may not connect.
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", ipcd.sock, "status"))
    assert code == 4, out
    assert "permission denied" in out and "join group ipcd" in out and "sudo" in out
    assert "Traceback" not in out


@needs_root
def test_role_refusal_exits_4(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[control]\nsocket_mode = "0666"\n').start()
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "shutdown"))
    assert code == 4, out
    assert "admin" in out
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "--json", "status"))
    assert code == 0, out
    assert json.loads(out)["pid"] == d.proc.pid
    assert d.call("ping")["pong"]  # still running


# --- how ipcctl is put together ---------------------------------------------------------


def _imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that the module at `path` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith(package + ".")}
    return found


def test_ipcctl_modules_import_without_a_cycle() -> None:
    """Commands import what they share (`common`, `errors`); only `cli` imports the commands."""
    folder = ROOT / "ipcd" / "ctl"
    modules = {f"ipcd.ctl.{p.stem}": p for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}
    graph = {name: _imports(path, "ipcd.ctl") & modules.keys() for name, path in modules.items()}
    assert not any("ipcd.ctl.cli" in deps for deps in graph.values()), graph
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_every_command_is_added_in_cli() -> None:
    assert isinstance(cli, click.Group)
    assert set(cli.commands) == {
        "status",
        "ping",
        "call",
        "shutdown",
        "reload",
        "clients",
        "logs",
        "send",
        "kv",
        "publish",
        "subscribe",
        "doctor",
        "completion",
        "metrics",
    }
    for path in (ROOT / "ipcd" / "ctl").glob("*.py"):
        assert "def register(" not in path.read_text(), path


# --- what status shows ------------------------------------------------------------------------------


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
