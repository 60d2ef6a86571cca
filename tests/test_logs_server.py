"""`ipcd.logs.server`: the log socket as the log process sets it up."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import Ipcd, needs_program
from helpers_logs import status


@needs_program("ss")  # iproute2: reads the socket's buffer size
def test_log_socket_gets_the_receive_buffer_asked_for(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(config="[log]\nreceive_buffer_bytes = 3145728\n").start()
    fd_dir = Path(f"/proc/{status(d)['log_process']['pid']}/fd")  # the log process holds the log socket
    inodes = {
        os.readlink(fd_dir / fd)[8:-1] for fd in os.listdir(fd_dir) if os.readlink(fd_dir / fd).startswith("socket:[")
    }
    out = subprocess.run(["ss", "-xam"], capture_output=True, text=True, check=True).stdout
    sizes = [
        int(m.group(2))
        for m in re.finditer(r"^u_dgr\s.*?\s(\d+)\s+\*\s+0\s+skmem:\(r\d+,rb(\d+)", out, re.M)
        if m.group(1) in inodes
    ]
    # The kernel doubles what it is asked for (socket(7), SO_RCVBUF); root may pass rmem_max.
    expected = 2 * 3145728 if os.geteuid() == 0 else None
    assert sizes, out
    assert sizes[0] == expected if expected else sizes[0] > 212992
