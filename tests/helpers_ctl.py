"""A running `ipcctl` whose output lines the test waits for, each with a deadline."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

from conftest import ipcctl_argv


class Lines:
    """Lines from a pipe of a subprocess, each waited for with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], fd: int) -> None:
        self.proc = proc
        self.fd = fd
        self.buf = b""

    def next(self, timeout_s: float = 10.0) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no line from {self.proc.args} within {timeout_s:g} s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError(f"{self.proc.args} ended (exit {self.proc.wait(5)})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def until(self, pred: Callable[[str], bool], timeout_s: float = 20.0) -> list[str]:
        """Lines up to and including the first that `pred` accepts."""
        deadline = time.monotonic() + timeout_s
        seen = []
        while True:
            seen.append(self.next(max(0.01, deadline - time.monotonic())))
            if pred(seen[-1]):
                return seen


class Streaming:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.out = Lines(proc, proc.stdout.fileno())
        self.err = Lines(proc, proc.stderr.fileno())


@contextlib.contextmanager
def streaming(*args: str) -> Iterator[Streaming]:
    """ipcctl ARGS running; at the end, Ctrl-C must stop it with exit 0 (as journalctl -f)."""
    proc = subprocess.Popen(
        ipcctl_argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield Streaming(proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
