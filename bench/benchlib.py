"""What the benchmark runners share: the C load generator, servers in temp dirs, tables.

Every runner starts each server itself in a short temp dir under /tmp
(AF_UNIX paths are at most 107 bytes), waits for it with a deadline, and
stops and reaps everything in `finally` (an ExitStack of `Server`s), Ctrl-C
included.  Only this machine's own sockets are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen"
LOADGEN_SRC = BENCH / "loadgen.c"
BASELINES = BENCH / "baselines"
PYTHON = sys.executable  # the venv's, where ipcd is installed
CC = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lpthread"]

PING = '{"jsonrpc":"2.0","id":1,"method":"ping"}'


def rpc_line(method: str, params: dict[str, Any] | None = None) -> str:
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        req["params"] = params
    return json.dumps(req, separators=(",", ":"))


# -- the load generator -------------------------------------------------------


def build_loadgen() -> Path:
    """Compile bench/loadgen.c when the binary is missing or older than its source."""
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < LOADGEN_SRC.stat().st_mtime:
        if not shutil.which("cc"):
            sys.exit("bench: needs a C compiler (apt-get install gcc libc6-dev)")
        subprocess.run(CC, check=True)
    return LOADGEN


def loadgen_cmd(mode: str, socket_path: str | Path, *args: object, pin: int | None = None) -> list[str]:
    cmd = [str(build_loadgen()), mode, "--socket", str(socket_path), *map(str, args)]
    if pin is not None:
        cmd += ["--pin", str(pin)]
    return cmd


def loadgen(mode: str, socket_path: str | Path, *args: object, pin: int | None = None, timeout: float = 600) -> dict:
    """Run loadgen to the end and return its JSON line."""
    cmd = loadgen_cmd(mode, socket_path, *args, pin=pin)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return parse_loadgen(p.stdout, p.stderr, p.returncode, cmd)


def parse_loadgen(stdout: str, stderr: str, rc: int, cmd: Sequence[str]) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if rc != 0 or not lines:
        raise RuntimeError(f"loadgen failed (exit {rc}): {' '.join(cmd)}\n{stderr.strip()}\n{stdout.strip()}")
    result: dict = json.loads(lines[-1])
    return result


# -- servers ------------------------------------------------------------------


class Server:
    """A server process in its own process group, stopped and reaped by `stop` (idempotent)."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path | None = None, **popen: Any) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log = log
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self._out = out
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out, process_group=0, **popen)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll `probe` until it returns true; fail if the server dies or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if probe():
                    return
            except OSError:
                pass
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was ready{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s{self.tail()}")
            time.sleep(0.01)

    def tail(self) -> str:
        if self.log and self.log.exists():
            return "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._out is not subprocess.DEVNULL:
            self._out.close()  # type: ignore[union-attr]


class Loadgen:
    """A loadgen running in the background (for load beside a measurement); `finish` ends it."""

    def __init__(self, mode: str, socket_path: str | Path, *args: object, pin: int | None = None) -> None:
        self.cmd = loadgen_cmd(mode, socket_path, *args, pin=pin)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> dict:
        """SIGTERM (loadgen stops and prints what it measured) and return its JSON line."""
        self.signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        return parse_loadgen(out, err, self.proc.returncode, self.cmd)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@contextlib.contextmanager
def workdir(prefix: str = "ib-") -> Iterator[Path]:
    """A short temp dir under /tmp, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def call(target: str | Path | socket.socket, method: str, params: dict | None = None, timeout: float = 30) -> Any:
    """One JSON-RPC call, on a connection of its own (a path) or on an open socket; the result."""
    if not isinstance(target, socket.socket):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(target))
            return call(s, method, params)
    target.sendall((rpc_line(method, params or {}) + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        chunk = target.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"{method}: connection closed")
        data += chunk
    reply = json.loads(data)
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def rpc_ready(path: Path) -> Callable[[], bool]:
    return lambda: call(path, "ping", timeout=2)["pong"] is True


def start_ipcd(d: Path, config: str = "", name: str = "ipcd", **popen: Any) -> tuple[Server, Path, Path]:
    """A fresh ipcd in `d`; its control and log socket paths (`popen`: e.g. the cwd and env of another tree)."""
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "ipcd.toml"
    conf.write_text(config)
    run, state = d / "r", d / "s"
    srv = Server(
        name,
        [PYTHON, "-m", "ipcd", "--runtime-dir", run, "--state-dir", state, "--config", conf, "--log-level", "warning"],
        log=d / "ipcd.log",
        **popen,
    )
    ctl = run / "ipcd.sock"
    try:
        srv.wait_ready(rpc_ready(ctl))
    except BaseException:
        srv.stop()
        raise
    return srv, ctl, run / "log.sock"


def start_minimal_rpc(d: Path) -> tuple[Server, Path]:
    d.mkdir(parents=True, exist_ok=True)
    sock = d / "m.sock"
    srv = Server("minimal_rpc.py", [PYTHON, BASELINES / "minimal_rpc.py", sock], log=d / "minimal_rpc.log")
    try:
        srv.wait_ready(rpc_ready(sock))
    except BaseException:
        srv.stop()
        raise
    return srv, sock


def redis_reply(path: Path, *words: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(path))
        s.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
        return s.recv(65536)


def start_redis(d: Path, appendfsync: str = "everysec") -> tuple[Server, Path]:
    """redis-server on a unix socket only: AOF, fsync every second (or `appendfsync`: "always"), no RDB snapshots."""
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is missing: see bench/README.md (apt-get install redis-server redis-tools)")
    d.mkdir(parents=True, exist_ok=True)
    sock = d / "redis.sock"
    cmd = [exe, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d]
    cmd += ["--appendonly", "yes", "--appendfsync", appendfsync, "--save", "", "--daemonize", "no"]
    cmd += ["--logfile", d / "redis.log"]
    srv = Server("redis-server", [str(c) for c in cmd])
    try:
        srv.wait_ready(lambda: redis_reply(sock, "PING").startswith(b"+PONG"))
    except BaseException:
        srv.stop()
        raise
    return srv, sock


# -- CPU pinning --------------------------------------------------------------


def tasks(pid: int) -> list[int]:
    """Every thread of `pid` and of its descendants (ipcd may fork a log process)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(FileNotFoundError):
            for tid in os.listdir(f"/proc/{p}/task"):
                out.append(int(tid))
                with contextlib.suppress(FileNotFoundError), open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return out


def pin(pid: int, cpus: set[int]) -> None:
    """Set the affinity of every thread of a server; threads it starts later inherit it."""
    for tid in tasks(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)


ALL_CPUS = os.sched_getaffinity(0)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) `pid` has used, its ended threads included (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (proc(5))


@contextlib.contextmanager
def pinned(pid: int, cpu: int) -> Iterator[None]:
    pin(pid, {cpu})
    try:
        yield
    finally:
        pin(pid, ALL_CPUS)


# -- figures ------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float, digits: int = 0) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.{digits}f}"


def cell(xs: Sequence[float], digits: int = 0) -> str:
    """The median and the spread of the reps: `12,345 (12,001-12,600)`."""
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt(xs[0], digits)
    return f"{fmt(median(xs), digits)} ({fmt(min(xs), digits)}-{fmt(max(xs), digits)})"


def ratio(num: Sequence[float], den: Sequence[float]) -> str:
    """The ratio of the medians, and in brackets, for reps that alternated (as many of
    each), the median of each rep's own ratio: `0.94 [0.91]`.  The two figures of a rep
    ran seconds apart, so where a shared machine's speed drifts from minute to minute,
    the bracketed figure is the steadier."""
    if not num or not den or median(den) == 0:
        return "-"
    text = f"{median(num) / median(den):.2f}"
    if len(num) == len(den) > 1 and all(den):
        text += f" [{median([a / b for a, b in zip(num, den, strict=True)]):.2f}]"
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first to the left, the rest to the right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        lines.append("  " + "  ".join(cells).rstrip())
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), kernel {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        f"load average {os.getloadavg()[0]:.2f} (other processes on these cores show in the figures)"
    )


def dgram_qlen() -> int:
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        return int(f.read())
