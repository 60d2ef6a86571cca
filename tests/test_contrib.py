"""The contrib/ examples run against a real ipcd, and the shell completions are current."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, ROOT, Ipcd, ipcctl_argv, needs_program, wait_for

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


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completions_are_current(shell: str) -> None:
    """Regenerate with: _IPCCTL_COMPLETE=<shell>_source ipcctl > contrib/completions/ipcctl.<shell>"""
    res = subprocess.run(
        ipcctl_argv(),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "_IPCCTL_COMPLETE": f"{shell}_source"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (CONTRIB / "completions" / f"ipcctl.{shell}").read_text().strip()


def test_bash_completion_completes_the_ipc_commands() -> None:
    script = CONTRIB / "completions" / "ipcctl.bash"
    words = {"ipcctl kv ": ["del", "get", "ls", "set", "watch"], "ipcctl sub": ["subscribe"], "ipcctl kv set --": None}
    for line, want in words.items():
        cmd = (
            f"source {script}; COMP_WORDS=({line}''); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
            'compopt() { :; }; _ipcctl_completion ipcctl; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        res = subprocess.run(
            ["bash", "-c", cmd],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        )
        assert res.returncode == 0, res.stderr
        got = res.stdout.split()
        if want is None:
            assert {"--json-value", "--ttl", "--if-version"} <= set(got), got
        else:
            assert got == want, (line, got)
