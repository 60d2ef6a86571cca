"""Every memory attack of issue #10 at once, against a daemon on default limits.

One local user (read role) fills all 64 connections it may open with what
costs ipcd memory, and never reads a byte: logs.query results of its own
64 KiB entries, pipelined `methods` calls, 1 MiB batches, 1 MiB lines that
become 25 times their size as Python objects, 1 MiB half-lines, 256
kv.watch and 256 channels per connection; a writer fills kv to
`[kv] max_bytes` with 1 MB values and publishes 1 MiB messages to those
channels; and the user floods the log socket with 64 KiB datagrams while
the state dir is full, so entries wait in memory up to
`[store] max_pending_bytes`.  Both processes must stay under the bounds
README "Security" derives from the defaults, a bystander's pings must be
answered within a second throughout, and ipcd must stop cleanly.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Conn, Ipcd, needs_program, needs_root, run_as, wait_for
from helpers_attack import held_as, vm_kib
from helpers_fs import fill, start_on_tmpfs

ATTACKER, WRITER, BYSTANDER = 3201, 3202, 3203
MiB = 1 << 20
# README "Security", "Memory": the bounds at the default limits, in MiB: what one hostile uid can
# make the control process hold, with kv full (a writer's), and the log process's.
CONTROL_BOUND_MIB = 300 + 130
LOG_BOUND_MIB = 175


def line(method: str, params: Any = None, req_id: int = 1) -> bytes:
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        req["params"] = params
    return json.dumps(req).encode() + b"\n"


def attacker_connections(sock: str) -> Callable[[], object]:
    """The user's 64 connections, each sent what makes ipcd hold the most, none ever read."""

    def setup() -> object:
        conns: list[socket.socket] = []

        def conn(data: bytes) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused mid-send (-32002, the uid's share of max_queued_bytes is held): a limit at work
            conns.append(s)

        for _ in range(10):  # its own 64 KiB entries: 120 of them, 7.8 MB of reply each
            conn(line("logs.query", {"uid": ATTACKER, "limit": 120}))
        for _ in range(8):  # 8192 calls in 64 KiB
            conn(b"methods\n" * 8192)
        batch = b"[" + b",".join([b'{"jsonrpc":"2.0","id":1,"method":"methods"}'] * 23_000) + b"]\n"
        for _ in range(6):  # 1 MiB batches (past max_batch)
            conn(batch)
        tree = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[' + b",".join([b"{}"] * 340_000) + b"]}\n"
        for _ in range(4):  # 1 MiB that parse to 25 MB each
            conn(tree * 4)
        for _ in range(8):  # 1 MB half-lines
            conn(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":["' + b"h" * 1_000_000)
        for _ in range(12):  # 256 watches each
            conn(b"".join(line("kv.watch", {"prefix": ""}, i) for i in range(256)))
        channels = [f"c{i}" for i in range(256)]
        for _ in range(10):  # 256 channels each
            conn(line("subscribe", {"channels": channels}))
        return conns  # kept open by the caller until the test ends

    return setup


def writer(sock: str) -> Callable[[], tuple[int, str]]:
    def work() -> tuple[int, str]:
        value = "v" * 999_998  # 1,000,000 bytes of JSON
        with Conn(sock, 60) as c:
            for i in range(64):
                reply = c.call("kv.set", {"key": f"big/{i}", "value": value})
                if "code" in reply and reply.get("data", {}).get("limit") != "max_bytes":
                    return 1, f"kv.set {i}: {reply}"
            message = "m" * (MiB - 100)
            for _ in range(30):
                reply = c.call("publish", {"channel": "c0", "message": message})
                if "delivered" not in reply:
                    return 1, f"publish: {reply}"
        return 0, ""

    return work


def flood(log_sock: str, n: int) -> Callable[[], tuple[int, str]]:
    def work() -> tuple[int, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(b"<14>flood: %06d " % i + b"f" * 65_000, log_sock)
        return 0, ""

    return work


class Pings:
    """A bystander (another uid) pinging all along: the slowest answer, and failures."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.r, w = os.pipe()
        self.go_r, self.go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(self.r)
                os.close(self.go_w)
                os.setgroups([])
                os.setgid(BYSTANDER)
                os.setuid(BYSTANDER)
                os.set_blocking(self.go_r, False)
                worst, n = 0.0, 0
                with Conn(sock, 5.0) as c:
                    while True:
                        try:
                            if os.read(self.go_r, 1) == b"":
                                break
                        except BlockingIOError:
                            pass
                        t0 = time.monotonic()
                        assert c.call("ping")["pong"]
                        worst = max(worst, time.monotonic() - t0)
                        n += 1
                        time.sleep(0.05)
                os.write(w, json.dumps({"worst_s": worst, "n": n}).encode())
            except BaseException as e:
                os.write(w, json.dumps({"error": repr(e)}).encode())
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        os.close(self.go_r)

    def finish(self) -> dict[str, Any]:
        os.close(self.go_w)
        said = os.read(self.r, 4096).decode()
        os.close(self.r)
        os.waitpid(self.pid, 0)
        result: dict[str, Any] = json.loads(said)
        return result


@needs_root
@needs_program("unshare", "mount")
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_memory_stays_bounded_under_every_attack_at_once(make_ipcd, capsys) -> None:
    d: Ipcd = make_ipcd(f'[control]\nsocket_mode = "0666"\n[access]\nwrite_uids = [{WRITER}]\n')
    start_on_tmpfs(d, "160m")  # room for kv's 64 MB and the attacker's entries, then filled
    assert d.proc is not None
    control_pid = d.proc.pid
    filler = Path(f"/proc/{control_pid}/root") / str(d.state_dir).lstrip("/") / "filler"
    root = d.conn(30)
    log_pid = root.call("status")["log_process"]["pid"]
    peak = {"control": 0, "log": 0}
    stop = threading.Event()

    def sample() -> None:
        with d.conn(30) as c:
            while not stop.is_set():
                mem = c.call("status")["memory"]
                peak["control"] = max(peak["control"], mem["rss_bytes"])
                peak["log"] = max(peak["log"], mem["log_process_rss_bytes"])
                stop.wait(0.1)

    try:
        # The attacker's own big entries, stored while there is room.
        code, out = run_as(ATTACKER, ATTACKER, flood(d.log_sock, 140))
        assert code == 0, out
        wait_for(lambda: root.call("status")["logs"]["stored"] == 140, 30, "the attacker's entries")
        before = {"control": vm_kib(control_pid, "VmRSS"), "log": vm_kib(log_pid, "VmRSS")}
        sampler = threading.Thread(target=sample)
        sampler.start()
        pings = Pings(d.sock)
        try:
            with held_as(ATTACKER, attacker_connections(d.sock)):
                wait_for(lambda: root.call("status")["kv"]["watchers"] == 12 * 256, 60, "the watches")
                code, out = run_as(WRITER, WRITER, writer(d.sock))
                assert code == 0, out
                fill(filler)  # then the state dir is full: log entries wait in memory
                code, out = run_as(ATTACKER, ATTACKER, flood(d.log_sock, 1500))
                assert code == 0, out
                st = wait_for(
                    lambda: (s := root.call("status"))["logs"]["dropped"] > 0 and s, 60, "pending entries to fill up"
                )
                held = st["connections"]["queued_bytes"]
                hwm = {"control": vm_kib(control_pid, "VmHWM"), "log": vm_kib(log_pid, "VmHWM")}
        finally:
            ping = pings.finish()
            stop.set()
            sampler.join(30)
        with capsys.disabled():
            print(
                f"\n  control: RSS {before['control'] // 1024} MiB before, peak {hwm['control'] // 1024} MiB "
                f"(sampled {peak['control'] // MiB}); log process: {before['log'] // 1024} MiB before, "
                f"peak {hwm['log'] // 1024} MiB (sampled {peak['log'] // MiB}); queued for readers "
                f"{held // MiB} MiB; pending {st['logs']['pending']} entries, {st['logs']['dropped']} dropped; "
                f"bystander's slowest ping {ping.get('worst_s', -1):.3f} s of {ping.get('n')}"
            )
        assert "error" not in ping, ping
        assert ping["worst_s"] < 1.0, ping
        assert hwm["control"] < CONTROL_BOUND_MIB * 1024, hwm
        assert hwm["log"] < LOG_BOUND_MIB * 1024, hwm
        wait_for(lambda: root.call("status")["connections"]["active"] <= 2, 60, "the attacker's connections to go")
        assert root.call("status")["connections"]["queued_bytes"] == 0
        filler.unlink()
        wait_for(lambda: root.call("status")["logs"]["pending"] == 0, 60, "the pending entries to be written")
    finally:
        stop.set()
        root.close()
    assert d.stop(timeout_s=60) == 0
