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


# --- strings and JSON told apart; many keys at once ------------------------------------------


def test_kv_get_tells_strings_from_json(ipcd: Ipcd) -> None:
    for key, value in [("s", "hello"), ("s42", "42"), ("n42", 42), ("t", "true"), ("q", '"x"'), ("o", {"a": [1]})]:
        ipcd.call("kv.set", {"key": key, "value": value})
    assert ok(ipcd, "kv", "get", "s") == "hello\n"
    assert ok(ipcd, "kv", "get", "s42") == '"42"\n'  # the string: it would read as the number
    assert ok(ipcd, "kv", "get", "n42") == "42\n"
    assert ok(ipcd, "kv", "get", "t") == '"true"\n'
    assert ok(ipcd, "kv", "get", "q") == '"\\"x\\""\n'
    assert ok(ipcd, "kv", "get", "o") == '{"a": [1]}\n'
    assert "type:    string" in ok(ipcd, "kv", "get", "-v", "s42")
    assert "type:    JSON number" in ok(ipcd, "kv", "get", "-v", "n42")
    assert json.loads(ok(ipcd, "--json", "kv", "get", "s42"))["value"] == "42"  # --json: always JSON


def test_kv_ls_values_and_del_prefix(ipcd: Ipcd) -> None:
    for i in range(150):  # more than one pipelining window
        ipcd.call("kv.set", {"key": f"job/{i:03d}", "value": {"n": i} if i % 2 else f"v{i}"})
    ipcd.call("kv.set", {"key": "keep", "value": "x"})
    lines = ok(ipcd, "kv", "ls", "--values", "job/").splitlines()
    assert lines[:3] == ["job/000 = v0", 'job/001 = {"n": 1}', "job/002 = v2"] and len(lines) == 150
    values = json.loads(ok(ipcd, "--json", "kv", "ls", "--values", "job/"))
    assert values["job/001"] == {"n": 1} and len(values) == 150
    assert ok(ipcd, "kv", "del", "--prefix", "job/") == "deleted 150 keys under job/\n"
    assert ok(ipcd, "kv", "ls") == "keep\n"
    assert ok(ipcd, "kv", "del", "--prefix", "job/") == "deleted 0 keys under job/\n"
    res = run(ipcd, "kv", "del", "--prefix", "")
    assert res.exit_code == 2 and "empty prefix" in res.output
    assert json.loads(ok(ipcd, "--json", "kv", "del", "--prefix", "ke")) == {"deleted": ["keep"]}


def test_publish_help_is_its_own() -> None:
    res = CliRunner().invoke(cli, ["publish", "--help"], prog_name="ipcctl")
    assert "Parse MESSAGE as JSON" in res.output and "VALUE" not in res.output
    res = CliRunner().invoke(cli, ["kv", "set", "--help"], prog_name="ipcctl")
    assert "Parse VALUE as JSON" in res.output


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\rline\nsshd[1]: Accepted password for root\u202e"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\rline"


def test_peer_text_is_escaped_in_kv_and_channels(ipcd: Ipcd) -> None:
    ipcd.call("kv.set", {"key": "evil", "value": HOSTILE})
    out = ok(ipcd, "kv", "get", "evil")
    assert out == f"{SHOWN}\nsshd[1]: Accepted password for root\\u202e\n"  # one value: its lines as they are
    lines = ok(ipcd, "kv", "ls", "--values").splitlines()
    assert lines == [f"evil = {SHOWN}", "       sshd[1]: Accepted password for root\\u202e"]
    with spawn(ipcd, "subscribe", "-c", "1", "news") as sub, spawn(ipcd, "kv", "watch", "-c", "1", "ev") as watch:
        wait_for(lambda: ipcd.call("status")["kv"]["watchers"] == 1, 10, "the watch")
        wait_for(lambda: ipcd.call("publish", {"channel": "news", "message": HOSTILE})["delivered"] == 1, 10, "sub")
        ipcd.call("kv.set", {"key": "evil", "value": HOSTILE})
        sub_out, _ = finish(sub)
        watch_out, _ = finish(watch)
    assert "\x1b" not in sub_out + watch_out and "\u202e" not in sub_out + watch_out
    assert sub_out.startswith(f"news: {SHOWN}\n      sshd[1]")  # indented under the message
    assert watch_out.startswith(f"set evil = {SHOWN}\n           sshd[1]")


def test_clients_shows_idle_streams_and_escapes_the_command(ipcd: Ipcd) -> None:
    code = (
        "import socket, sys\n"
        "open('/proc/self/comm', 'w').write('\\x1b]0;x\\x07ev')\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        's.sendall(b\'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"channels":["c"]}}\\n\')\n'
        "s.recv(100); print('ready', flush=True); sys.stdin.read()\n"
    )
    peer = subprocess.Popen(
        [sys.executable, "-c", code, ipcd.sock], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert peer.stdout is not None and peer.stdout.readline() == "ready\n"
        out = ok(ipcd, "clients")
        rows = json.loads(ok(ipcd, "--json", "clients"))
    finally:
        peer.communicate("")
    assert "\x1b" not in out and "\\x1b]0;x\\x07ev" in out
    theirs = next(r for r in rows if r["pid"] == peer.pid)
    if "idle_s" in theirs:  # the daemon's newer fields: rendered when present
        assert "IDLE" in out
    if theirs.get("streams"):
        assert "stream subscribe:" in out
