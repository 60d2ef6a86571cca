"""A state dir on a tiny tmpfs, and filling it: for the tests of a full disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import Ipcd


def start_on_tmpfs(d: Ipcd, size: str) -> None:
    """ipcd with its state dir on a tmpfs of `size`, mounted in its own mount namespace."""
    d.state_dir.mkdir(parents=True, exist_ok=True)
    argv = d.argv()
    script = f'mount -t tmpfs -o size={size},mode=0755 ipcd-test "{d.state_dir}" && exec "$@"'
    with open(d.stderr_path, "ab") as err:
        d.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=d.env,
        )
    d.wait_ready()


def fill(path: Path) -> None:
    """Write zeros into `path` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
