"""A hostile local user in a test: a child process as another uid that holds what it opened."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def held_as(uid: int, setup: Callable[[], object]) -> Iterator[object]:
    """`setup()` run in a forked child as `uid` (no groups); what it returns is kept until the block ends.

    Yields what `setup` returned, as the child's `repr` of it would not do: a
    number or a short string (an int for a count, say).  A setup that raises
    fails the test with its error.
    """
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the attacker
        try:
            os.close(r)
            os.close(go_w)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            kept = setup()  # referenced until the child exits: its sockets stay open
            said = kept if isinstance(kept, (int, str)) else len(kept) if isinstance(kept, list) else 0
            os.write(w, f"ok {said}".encode())
            os.read(go_r, 1)  # hold it until told
        except BaseException as e:
            os.write(w, f"error {e!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.close(go_r)
    try:
        said = os.read(r, 4096).decode()
        assert said.startswith("ok "), said
        value = said[3:]
        yield int(value) if value.isdigit() else value
    finally:
        os.close(go_w)
        os.close(r)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def vm_kib(pid: int, key: str = "VmRSS") -> int:
    """A memory figure of process `pid` from /proc/PID/status (VmRSS, VmHWM...), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")
