"""The contrib/ examples run against a real ipcd, and the shell completions are current."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, ROOT, Ipcd, ipcctl_argv, needs_program, wait_for

from ipcd.client import Client

CONTRIB = ROOT / "contrib"


def env_without_ipcd(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPCD_")}
    return {**env, **extra}


@needs_program("socat")
def test_socat_script(ipcd: Ipcd) -> None:
    script = str(CONTRIB / "shell" / "ipcd-socat.sh")
    for argv, env in (([script], env_without_ipcd(IPCD_SOCKET=ipcd.sock)), ([script, ipcd.sock], env_without_ipcd())):
        res = subprocess.run(["sh", *argv], capture_output=True, text=True, env=env, timeout=30)
        assert res.returncode == 0, res.stderr
        replies = [json.loads(line) for line in res.stdout.splitlines()]
        assert [r.get("id") for r in replies] == [None, None, None, 1, None, None]
        ping, status, kv_set, kv_get, counter_set, counter_get = (r["result"] for r in replies)
        assert ping["pong"] is True and status["pid"] == ipcd.proc.pid
        assert kv_set["key"] == "greeting" and kv_get["value"] == "hello from socat"
        assert kv_get["set_by"]["command"] == "socat"
        assert counter_get["value"] == 41  # a plain arg that parses as JSON is JSON
    assert ipcd.call("kv.get", {"key": "greeting"})["version"] == 2
    res = subprocess.run(["sh", script, str(ipcd.run_dir / "none.sock")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 3 and "is ipcd running?" in res.stderr


@needs_program("cc")
def test_c_program(ipcd: Ipcd, tmp_path: Path) -> None:
    exe = tmp_path / "ipcd-hello"
    cc = subprocess.run(
        [
            "cc",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-o",
            str(exe),
            str(CONTRIB / "c" / "ipcd-hello.c"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cc.returncode == 0, cc.stderr
    pids = []
    for argv, env in (
        ([str(exe), ipcd.sock], env_without_ipcd()),
        ([str(exe)], env_without_ipcd(IPCD_SOCKET=ipcd.sock)),
    ):
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        assert res.returncode == 0, res.stderr
        logged, reply = res.stdout.splitlines()
        assert logged.startswith(f"logged to {ipcd.log_sock} as pid ")
        pids.append(int(logged.rsplit(" ", 1)[1]))
        doc = json.loads(reply)
        assert doc["id"] == 1 and doc["result"]["pong"] is True
    wait_for(lambda: len(ipcd.call("logs.query", {"ident": "ipcd-hello"})["entries"]) == 2, 5, "both log lines")
    entries = ipcd.call("logs.query", {"ident": "ipcd-hello"})["entries"]
    assert [(e["message"], e["pid"], e["sender_pid"]) for e in entries] == [("hello from C", p, p) for p in pids]
    res = subprocess.run([str(exe), str(ipcd.run_dir / "none.sock")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "No such file" in res.stderr


def test_python_example(ipcd: Ipcd) -> None:
    example = CONTRIB / "python" / "ipcd_example.py"
    proc = subprocess.Popen(
        [sys.executable, str(example)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_without_ipcd(IPCD_SOCKET=ipcd.sock),
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == ""
    assert "subscriber got: ['one', 'two', 'three']" in out
    assert "published 'three' to 1 subscriber(s)" in out
    assert "conflict, as expected: -32004" in out
    assert ipcd.call("kv.get", {"key": "example/counter"})["value"] == 2
    assert ipcd.call("kv.list", {"prefix": "example/"})["keys"] == ["example/counter", "example/session"]
    wait_for(lambda: ipcd.call("logs.query", {"ident": "ipcd-example"})["entries"], 5, "the example's log record")
    (entry,) = ipcd.call("logs.query", {"ident": "ipcd-example"})["entries"]
    assert entry["message"] == "example finished" and entry["sender_pid"] == proc.pid
    assert entry["fields"] == {"logger": "ipcd-example", "example_pid": proc.pid, "step": "done"}


def test_python_example_imports_only_the_client() -> None:
    tree = ast.parse((CONTRIB / "python" / "ipcd_example.py").read_text())
    ipcd_modules = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
        if ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).startswith("ipcd")
    }
    assert ipcd_modules == {"ipcd.client"}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions_are_current(shell: str) -> None:
    """Regenerate with: ipcctl completion <shell> > contrib/completions/ipcctl.<shell>"""
    res = subprocess.run(ipcctl_argv("completion", shell), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (CONTRIB / "completions" / f"ipcctl.{shell}").read_text()
    # click's own machinery: the same script as its environment variable gives
    env = {**os.environ, "_IPCCTL_COMPLETE": f"{shell}_source"}
    same = subprocess.run(ipcctl_argv(), capture_output=True, text=True, timeout=30, env=env)
    assert same.stdout.strip() == res.stdout.strip()


def complete(line: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers for `line` (the cursor at its end), through the script in contrib/."""
    script = CONTRIB / "completions" / "ipcctl.bash"
    cmd = (
        f"source {script}; COMP_WORDS=({line}''); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
        'compopt() { :; }; _ipcctl_completion ipcctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    full = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30, env=full)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # nothing ever printed into the command line
    return res.stdout.split()


def test_bash_completes_commands_and_options() -> None:
    assert complete("ipcctl kv ") == ["del", "get", "ls", "set", "watch"]
    assert complete("ipcctl sub") == ["subscribe"]
    assert {"--json-value", "--ttl", "--if-version"} <= set(complete("ipcctl kv set --"))
    assert complete("ipcctl comp") == ["completion"]
    assert complete("ipcctl completion ") == ["bash", "zsh", "fish"]
    assert complete("ipcctl logs -o short") == ["short", "short-iso", "short-precise"]
    assert {"--unit", "--reverse", "--no-pager", "--since"} <= set(complete("ipcctl logs --"))


def test_bash_completes_priorities_and_ranges() -> None:
    assert complete("ipcctl logs -p w") == ["warning"]
    assert complete("ipcctl logs -p e") == ["emerg", "err"]
    assert complete("ipcctl logs -p warning..e") == ["warning..emerg", "warning..err"]


def test_bash_completes_keys_channels_and_units_from_the_daemon(ipcd: Ipcd) -> None:
    env = {"IPCD_SOCKET": ipcd.sock}
    for key in ("app/mode", "app/limits", "other"):
        ipcd.call("kv.set", {"key": key, "value": 1})
    assert complete("ipcctl kv get app/", env) == ["app/limits", "app/mode"]
    assert complete(f"ipcctl --socket {ipcd.sock} kv del o") == ["other"]
    with Client(ipcd.sock) as sub:
        sub.subscribe(["builds", "deploys"])
        assert complete("ipcctl publish b", env) == ["builds"]
        assert complete("ipcctl subscribe ", env) == ["builds", "deploys"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:  # no unit here: nothing to offer, no error
        s.sendto(b"<13>x: y", ipcd.log_sock)
    assert complete("ipcctl logs -u ", env) == []


def test_completion_that_needs_the_daemon_is_quiet_and_quick_when_it_is_down(short_tmp: Path) -> None:
    env = {"IPCD_SOCKET": str(short_tmp / "none.sock")}
    assert complete("ipcctl kv get ", env) == []
    assert complete("ipcctl subscribe ", env) == []
    assert complete("ipcctl logs -u ", env) == []
