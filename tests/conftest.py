"""Fixtures: a real ipcd in a short temporary directory, real sockets, real clients.

AF_UNIX paths are at most 107 bytes, so daemons live under /tmp/ipcd-XXXX,
not under pytest's long tmp_path.  Nothing here sleeps to hope: `wait_for`
polls a condition against a deadline and says what it waited for.
"""

# Where a test goes.  A test file is named after the module it tests, flat, the
# package as a prefix: ipcd/logs/writer.py -> test_logs_writer.py,
# ipcd/logs/forward/rfc5424.py -> test_logs_forward_rfc5424.py, ipcd/config.py ->
# test_config.py.  A test that reaches its module through a real daemon goes
# there too (`logs.query` over the socket: test_logs_methods.py; `ipcctl logs`:
# test_ctl_logs.py).  A behaviour of the whole daemon, owned by no one module,
# keeps a behaviour name: test_daemon_activation.py (the systemd contract without
# systemd), test_faults.py, test_robustness.py, test_security.py, test_layers.py,
# test_security_memory.py (every memory attack at once), test_systemd_manager.py
# (under a real systemd), test_contrib.py,
# test_manpages.py, test_sdbox.py (the box itself).  What several files share is
# here (fixtures, `wait_for`, `Conn`, `Ipcd`) or in a helpers_*.py beside them;
# a test file imports from no other test file.

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from ipcd.ctl.cli import COMMANDS, cli

# ipcctl and ipcd.client import their parts when first used; load them all now, so that a
# child forked to run as another uid (`run_as`) never has to read the interpreter's files,
# which may sit under a home directory that uid cannot enter.
for _module in {f"ipcd.ctl.{where[0]}" for where in COMMANDS.values()} | {
    "ipcd.client.connection",
    "ipcd.client.handler",
    "ipcd.client.resolve",
    "ipcd.client.trust",
}:
    importlib.import_module(_module)

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (CI runs as root): other uids, mounts or systemd")


def needs_program(*names: str) -> pytest.MarkDecorator:
    """Skip a test that runs these programs (commands on PATH, or absolute paths) where one is missing.

    A fresh machine may lack socat, a C compiler or systemd, and `make test`
    must pass there.  CI must run them all: .ci/run installs every such
    program and sets IPCD_TESTS_NEED_ALL_PROGRAMS, which turns the skip off,
    so that a program it forgot fails the test instead of skipping it.
    """
    missing = [name for name in names if shutil.which(name) is None]
    if os.environ.get("IPCD_TESTS_NEED_ALL_PROGRAMS"):
        missing = []
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (not installed; .ci/run installs it)")


def wait_for(pred: Callable[[], T], timeout_s: float = 10.0, what: str = "condition", interval_s: float = 0.005) -> T:
    """Poll `pred` until it returns something true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ipcd-", dir="/tmp"))
    os.chmod(d, 0o755)  # other-uid tests must be able to reach the sockets
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Conn:
    """A raw line-oriented connection to the control socket."""

    def __init__(self, path: str | Path, timeout_s: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(str(path))
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""
        self._id = 0

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, obj: Any) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def readline(self) -> bytes:
        """One line, or b"" at EOF."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def recv_json(self) -> Any:
        line = self.readline()
        assert line, "connection closed before a reply"
        return json.loads(line)

    def call(self, method: str, params: Any = None) -> Any:
        """Result of `method`, or the whole error object (a dict with "code")."""
        self._id += 1
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id, "method": method}
        if params is not None:
            req["params"] = params
        self.send_json(req)
        while True:
            reply = self.recv_json()
            if reply.get("id") == self._id or (reply.get("id") is None and "error" in reply):
                break
        return reply["result"] if "result" in reply else reply["error"]

    def at_eof(self) -> bool:
        return self.readline() == b""


class Ipcd:
    """One ipcd process with its own runtime and state dirs."""

    def __init__(self, root: Path, config: str = "", env: dict[str, str] | None = None) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.state_dir = root / "state"
        self.config = root / "ipcd.toml"
        self.config.write_text(config)
        self.stderr_path = root / "ipcd.stderr"
        self.env = {**os.environ, **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> str:
        return str(self.run_dir / "ipcd.sock")

    @property
    def log_sock(self) -> str:
        return str(self.run_dir / "log.sock")

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ipcd",
            "--runtime-dir",
            str(self.run_dir),
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(self.config),
            *extra,
        ]

    def start(self, *extra: str, wait: bool = True) -> Ipcd:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv(*extra), stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=self.env
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"ipcd exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                with Conn(self.sock, 2.0) as c:
                    return bool(c.call("ping").get("pong"))
            except OSError:
                return False

        wait_for(up, timeout_s, "ipcd to answer ping")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def conn(self, timeout_s: float = 10.0) -> Conn:
        return Conn(self.sock, timeout_s)

    def call(self, method: str, params: Any = None) -> Any:
        with self.conn() as c:
            return c.call(method, params)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ipcd did not stop within {timeout_s} s:\n{self.stderr()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def make_ipcd(short_tmp: Path) -> Iterator[Callable[..., Ipcd]]:
    """Factory: make_ipcd(config="...", name="a") -> an unstarted Ipcd."""
    made: list[Ipcd] = []

    def make(config: str = "", name: str = "d", env: dict[str, str] | None = None) -> Ipcd:
        root = short_tmp / name
        root.mkdir(exist_ok=True)
        d = Ipcd(root, config, env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.kill()


@pytest.fixture
def ipcd(make_ipcd: Callable[..., Ipcd]) -> Ipcd:
    """A running ipcd on default settings."""
    return make_ipcd().start()


def wait_only_connection(c: Conn, what: str = "ipcd to count only this connection") -> None:
    """Wait until ipcd counts `c` as its one connection (`status` connections.active == 1).

    ipcd counts a connection until its handler has seen it close, a moment
    after the client's close() returned: when a test starts, the readiness
    check's connection (`wait_ready`) may still count.  Asked on `c` itself:
    a new connection for each look could be refused by those still counted.
    """
    wait_for(lambda: c.call("status")["connections"]["active"] == 1, 10, what)


def ipcctl_argv(*args: str) -> list[str]:
    exe = BIN / "ipcctl"
    if exe.exists():
        return [str(exe), *args]
    return [sys.executable, "-m", "ipcd.ctl", *args]


def ipcctl(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 30.0, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `ipcctl` as a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        ipcctl_argv(*args),
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout_s,
        input=input and input.decode(),
    )


def run_as(uid: int, gid: int, fn: Callable[[], tuple[int, str]], groups: tuple[int, ...] = ()) -> tuple[int, str]:
    """Run `fn` in a forked child under another uid/gid; (its exit code, its text).

    A fork, not an exec: the child needs no access to the venv's interpreter,
    which may sit under a home directory that other uids cannot enter.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code, out = 99, ""
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            code, out = fn()
        except BaseException:
            import traceback

            code, out = 98, traceback.format_exc()
        finally:
            os.write(w, out.encode())
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def ipcctl_in_process(*args: str) -> tuple[int, str]:
    """`ipcctl ARGS` run by click in this process (for `run_as` children)."""
    res = CliRunner().invoke(cli, list(args), prog_name="ipcctl")
    return res.exit_code, res.output


def reap(procs: list[subprocess.Popen[str]]) -> None:
    """Kill what still runs and close its pipes (a leaked pipe fails the suite)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()
