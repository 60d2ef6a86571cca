"""`ipcctl kv|publish|subscribe` against a real ipcd: output, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner, Result
from conftest import Ipcd, ipcctl_argv, ipcctl_in_process, needs_root, run_as, wait_for

from ipcd.ctl.cli import cli


def run(d: Ipcd, *args: str) -> Result:
    """`ipcctl --socket SOCK ARGS`, run by click in this process."""
    return CliRunner().invoke(cli, ["--socket", d.sock, *args], prog_name="ipcctl")


def ok(d: Ipcd, *args: str) -> str:
    res = run(d, *args)
    assert res.exit_code == 0, (args, res.output)
    return res.stdout


def spawn(d: Ipcd, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ipcctl_argv("--socket", d.sock, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(p: subprocess.Popen[str], timeout_s: float = 10) -> tuple[str, str]:
    try:
        return p.communicate(timeout=timeout_s)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_kv_set_get_ls_del(ipcd: Ipcd) -> None:
    assert ok(ipcd, "kv", "set", "greeting", "hello world") == "greeting: version 1\n"
    assert ok(ipcd, "kv", "get", "greeting") == "hello world\n"
    ok(ipcd, "kv", "set", "n", "42")  # a string, as typed
    assert json.loads(ok(ipcd, "--json", "kv", "get", "n"))["value"] == "42"
    assert ok(ipcd, "kv", "set", "n", "42", "--json-value") == "n: version 2\n"
    assert json.loads(ok(ipcd, "--json", "kv", "get", "n"))["value"] == 42
    ok(ipcd, "kv", "set", "cfg/x", '{"on": true, "list": [1, "a"]}', "--json-value")
    assert ok(ipcd, "kv", "get", "cfg/x") == '{"on": true, "list": [1, "a"]}\n'
    assert ok(ipcd, "kv", "ls") == "cfg/x\ngreeting\nn\n"
    assert ok(ipcd, "kv", "ls", "cfg/") == "cfg/x\n"
    assert ok(ipcd, "kv", "del", "greeting") == "deleted greeting\n"
    assert ok(ipcd, "kv", "ls", "g") == ""
    assert ipcd.call("kv.get", {"key": "cfg/x"})["value"] == {"on": True, "list": [1, "a"]}


def test_kv_json_output(ipcd: Ipcd) -> None:
    doc = json.loads(ok(ipcd, "--json", "kv", "set", "k", "v"))
    assert doc == {"key": "k", "version": 1, "expires_at": None}
    doc = json.loads(ok(ipcd, "--json", "kv", "get", "k"))
    assert doc["value"] == "v" and doc["version"] == 1 and doc["set_by"]["uid"] == os.getuid()
    assert json.loads(ok(ipcd, "--json", "kv", "ls")) == ["k"]
    assert json.loads(ok(ipcd, "--json", "kv", "del", "k")) == {"deleted": True}


def test_kv_ttl_and_if_version(ipcd: Ipcd) -> None:
    out = ok(ipcd, "kv", "set", "s", "v", "--ttl", "90")
    assert out.startswith("s: version 1, expires in 1m")
    verbose = ok(ipcd, "kv", "get", "-v", "s")
    assert "version: 1" in verbose and "expires: in 1m" in verbose and f"by uid {os.getuid()}" in verbose
    assert 85 < ipcd.call("kv.get", {"key": "s"})["expires_at"] - ipcd.call("ping")["time"] <= 90
    assert ok(ipcd, "kv", "set", "s", "w", "--if-version", "1") == "s: version 2\n"
    res = run(ipcd, "kv", "set", "s", "x", "--if-version", "1")
    assert res.exit_code == 1 and "-32004" in res.stderr and "version 2" in res.stderr
    res = run(ipcd, "kv", "set", "s", "x", "--if-version", "0")
    assert res.exit_code == 1
    assert ok(ipcd, "kv", "get", "s") == "w\n"


def test_missing_key_exits_1(ipcd: Ipcd) -> None:
    for args in (("kv", "get", "nope"), ("kv", "del", "nope")):
        res = run(ipcd, *args)
        assert res.exit_code == 1, res.output
        assert res.stderr == "ipcctl: error -32003: no key 'nope'\n" and res.stdout == ""


def test_usage_errors_exit_2(ipcd: Ipcd) -> None:
    for args in (
        ["kv", "set", "k", "{not json", "--json-value"],
        ["kv", "set", "k", "v", "--ttl", "0"],
        ["kv", "set", "k", "v", "--ttl", "soon"],
        ["kv", "set", "k", "v", "--if-version", "-1"],
        ["kv", "set", "k"],
        ["kv", "get"],
        ["kv", "nosuch"],
        ["publish", "ch"],
        ["publish", "ch", "{", "--json-value"],
        ["subscribe"],
        ["subscribe", "ch", "-c", "0"],
    ):
        res = run(ipcd, *args)
        assert res.exit_code == 2, (args, res.output)
        assert "Traceback" not in res.output
    assert ipcd.call("kv.list")["keys"] == []


def test_bad_key_is_the_daemons_error(ipcd: Ipcd) -> None:
    res = run(ipcd, "kv", "set", "x" * 257, "v")
    assert res.exit_code == 1 and "-32602" in res.stderr and "printable" in res.stderr


@needs_root
def test_role_refusal_exits_4(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[control]\nsocket_mode = "0666"\n').start()
    d.call("kv.set", {"key": "k", "value": "root's"})
    for args in (["kv", "set", "k", "mine"], ["kv", "del", "k"], ["publish", "ch", "hi"]):
        code, out = run_as(65534, 65534, lambda args=args: ipcctl_in_process("--socket", d.sock, *args))
        assert code == 4, (args, out)
        assert "needs the write role" in out and "[access]" in out and "Traceback" not in out
    code, out = run_as(65534, 65534, lambda: ipcctl_in_process("--socket", d.sock, "kv", "get", "k"))
    assert (code, out) == (0, "root's\n")
    assert d.call("kv.get", {"key": "k"})["version"] == 1


def test_publish_and_subscribe(ipcd: Ipcd) -> None:
    assert ok(ipcd, "publish", "news", "nobody") == "delivered to 0 subscribers\n"
    human = spawn(ipcd, "subscribe", "news", "alerts", "-c", "3")
    machine = spawn(ipcd, "--json", "subscribe", "alerts", "-c", "1")
    try:
        wait_for(lambda: ipcd.call("status")["channels"]["subscribers"] == 2, 10, "both ipcctl to subscribe")
        assert ok(ipcd, "publish", "news", "hello there") == "delivered to 1 subscriber\n"
        assert ok(ipcd, "publish", "alerts", '{"level": 2}', "--json-value") == "delivered to 2 subscribers\n"
        assert json.loads(ok(ipcd, "--json", "publish", "news", "bye")) == {"delivered": 1}
        out, err = finish(human)
        assert human.returncode == 0, err
        assert out == 'news: hello there\nalerts: {"level": 2}\nnews: bye\n'
        out, err = finish(machine)
        assert machine.returncode == 0, err
    finally:
        finish(human)
        finish(machine)
    doc = json.loads(out)
    assert doc["channel"] == "alerts" and doc["message"] == {"level": 2}
    assert doc["pid"] == os.getpid() and doc["uid"] == os.getuid() and doc["published_at"] > 0


def test_kv_watch(ipcd: Ipcd) -> None:
    machine = spawn(ipcd, "--json", "kv", "watch", "app/", "-c", "3")
    human = spawn(ipcd, "kv", "watch", "-c", "2")
    try:
        wait_for(lambda: ipcd.call("status")["kv"]["watchers"] == 2, 10, "both watchers")
        ok(ipcd, "kv", "set", "app/x", "1", "--json-value")
        ok(ipcd, "kv", "set", "other", "o")
        ok(ipcd, "kv", "del", "app/x")
        ok(ipcd, "kv", "set", "app/y", "done")
        out, err = finish(machine)
        assert machine.returncode == 0, err
        assert [json.loads(line) for line in out.splitlines()] == [
            {"key": "app/x", "op": "set", "value": 1, "version": 1},
            {"key": "app/x", "op": "delete", "value": None, "version": 1},
            {"key": "app/y", "op": "set", "value": "done", "version": 1},
        ]
        out, err = finish(human)
        assert out == "set app/x = 1 (version 1)\nset other = o (version 1)\n"
    finally:
        finish(machine)
        finish(human)


def test_a_subscriber_that_falls_behind_says_so_on_stderr(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nstream_queue = 4\n").start()
    # ipcctl writes to a pipe nobody reads: it blocks, stops reading its socket, and lags.
    p = spawn(d, "subscribe", "load")
    try:
        wait_for(lambda: d.call("status")["channels"]["subscribers"] == 1, 10, "ipcctl to subscribe")
        n = 300
        with d.conn() as pub:
            for i in range(n):
                pub.call("publish", {"channel": "load", "message": f"{i} {'x' * 4096}"})
            kept = pub.call("status")["channels"]["delivered"]  # one subscriber: what it was given
            assert 0 < kept < n
            assert p.stdout is not None and p.stderr is not None
            shown = [int(p.stdout.readline().split()[1]) for _ in range(kept)]
            # In order, and every gap said on stderr: how the gaps fall depends on when ipcctl blocked.
            assert shown == sorted(set(shown)) and shown[0] == 0
            edges = [0, *shown, n]
            gaps = [b - a - 1 for a, b in zip([-1, *shown], [*shown, n], strict=True) if b - a > 1]
            assert len(edges) == kept + 2 and sum(gaps) == n - kept
            said = [p.stderr.readline() for _ in gaps]
            assert said == [f"ipcctl: -- {g} messages missed: this reader fell behind --\n" for g in gaps]
            # Caught up, it shows new messages again.
            assert pub.call("publish", {"channel": "load", "message": "end"}) == {"delivered": 1}
            assert p.stdout.readline() == "load: end\n"
    finally:
        p.terminate()
        finish(p)


def test_python_m_ipcd_cli_has_the_ipc_commands(ipcd: Ipcd) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ipcd.ctl", "--socket", ipcd.sock, "kv", "ls"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
