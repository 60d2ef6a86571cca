"""sdbox smoke tests: a real systemd manager in throw-away namespaces."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_program, needs_root
from sdbox import PROGRAMS, SdBox, sdbox_available

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [needs_root, needs_program(*PROGRAMS)]


@pytest.fixture(scope="session")
def host_tmp_marker() -> Iterator[Path]:
    """A file in the host's /tmp, made before any box boots: a box must never wipe it."""
    fd, name = tempfile.mkstemp(prefix="sdbox-marker-", dir="/tmp")
    os.close(fd)
    marker = Path(name)
    try:
        yield marker
    finally:
        marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def sdbox(host_tmp_marker: Path) -> Iterator[SdBox]:
    """One booted box for the session, with the checkout and the venv bound read-only."""
    reason = sdbox_available()
    if reason is not None:
        pytest.skip(reason)
    box = SdBox(f"pytest-{os.getpid()}", binds=[ROOT, sys.prefix])
    try:
        box.start()
        yield box
    finally:
        box.stop()
    assert host_tmp_marker.exists(), "the host's /tmp was wiped while a box ran"


HELLO = """\
[Unit]
Description=sdbox smoke: Type=notify

[Service]
Type=notify
NotifyAccess=all
ExecStart=/bin/sh -c 'systemd-notify --ready --status="hello from box"; exec sleep infinity'
"""


def test_notify_service(sdbox: SdBox, host_tmp_marker: Path) -> None:
    box = sdbox
    assert box.system_state in ("running", "degraded")
    # The box really ran tmpfiles at boot (the step that would wipe a shared /tmp).
    assert box.show("systemd-tmpfiles-setup.service", "ActiveState")["ActiveState"] == "active"

    box.write_file("/etc/systemd/system/hello.service", HELLO)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "hello.service")  # returns once READY=1 arrived
    shown = box.show("hello.service", "ActiveState", "SubState", "StatusText", "MainPID")
    assert shown["ActiveState"] == "active", shown
    assert shown["SubState"] == "running", shown
    assert shown["StatusText"] == "hello from box", shown
    assert int(shown["MainPID"]) > 0

    box.run("systemctl", "stop", "hello.service")
    box.wait_unit(
        "hello.service", lambda s: s["ActiveState"] == "inactive", 10, "hello.service to stop", ["ActiveState"]
    )
    assert "hello" in box.journal("hello.service").lower()

    assert host_tmp_marker.exists(), "the host's /tmp was wiped"
    # The box's own /tmp is a private tmpfs: the host's marker is not in it.
    assert box.run("test", "-e", str(host_tmp_marker), check=False).returncode == 1


DEMO_SOCKET = """\
[Socket]
ListenStream=/run/demo.sock
Accept=no
"""

DEMO_SERVICE = """\
[Service]
ExecStart=/usr/local/bin/demo-echo
"""

DEMO_ECHO = """\
#!/usr/bin/python3
import os
import socket

assert os.environ["LISTEN_FDS"] == "1", os.environ
srv = socket.socket(fileno=3)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(b"echo:" + conn.recv(1024))
"""


def test_socket_activation_from_host(sdbox: SdBox) -> None:
    box = sdbox
    box.write_file("/usr/local/bin/demo-echo", DEMO_ECHO, mode=0o755)
    box.write_file("/etc/systemd/system/demo.socket", DEMO_SOCKET)
    box.write_file("/etc/systemd/system/demo.service", DEMO_SERVICE)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "demo.socket")
    shown = box.show("demo.socket", "ActiveState", "SubState")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "listening"), shown
    assert box.show("demo.service", "ActiveState")["ActiveState"] == "inactive"

    path = box.root / "run/demo.sock"
    assert not Path("/run/demo.sock").exists() or not os.path.samefile("/run/demo.sock", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"ping")
        reply = b""
        while chunk := s.recv(1024):
            reply += chunk
    assert reply == b"echo:ping"
    box.wait_unit("demo.service", lambda s: s["ActiveState"] == "active", 10, "demo.service activated by the socket")

    box.run("systemctl", "stop", "demo.socket", "demo.service")
    box.wait_unit("demo.socket", lambda s: s["ActiveState"] == "inactive", 10, "demo.socket to stop", ["ActiveState"])
    # The file stays (RemoveOnStop=no), but nobody listens on it any more.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, pytest.raises(ConnectionRefusedError):
        s.connect(str(path))
