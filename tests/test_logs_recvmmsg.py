"""`ipcd.logs.recvmmsg`: bursts read with their credentials and real lengths, by recvmmsg(2) and its fallback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from helpers_logs import MY_PID

from ipcd.logs.recvmmsg import Receiver


@pytest.mark.parametrize("use_mmsg", [True, False], ids=["recvmmsg", "recvmsg"])
def test_receiver_reads_bursts_with_credentials_and_real_lengths(short_tmp: Path, use_mmsg: bool) -> None:
    path = str(short_tmp / "r.sock")
    cap = 100
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx:
        rx.bind(path)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        receiver = Receiver(rx, cap, vlen=4, use_mmsg=use_mmsg)
        try:
            assert receiver.mmsg is use_mmsg
            assert receiver.read() == []  # nothing queued: no wait
            sizes = [0, 1, cap, cap + 1, 3 * cap, 7]
            for i, size in enumerate(sizes):
                tx.sendto(bytes([65 + i]) * size, path)
            got = receiver.read() + receiver.read()
            assert receiver.read() == []
        finally:
            receiver.close()
    me = (MY_PID, os.getuid(), os.getgid())
    assert got == [(bytes([65 + i]) * min(size, cap), size > cap, *me) for i, size in enumerate(sizes)]
