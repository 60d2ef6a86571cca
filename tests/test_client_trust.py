"""The client trusts no directory it did not check (DESIGN.md "Trust in directories and files").

The attack: without XDG_RUNTIME_DIR, another user makes `/tmp/ipcd-$UID`
first and listens there.  The victim's ipcctl, `send` and `LogHandler` must
refuse (exit 3, naming the directory) and the fake server must get nothing.
Run as root, with real other uids (the fake server's owner, the victim).
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IS_ROOT, ipcctl_in_process, needs_root, run_as

from ipcd.client import Untrusted, check_socket_path

ATTACKER, VICTIM = 1234, 4321
SYSTEM_SOCKET = Path("/run/ipcd/ipcd.sock")


def owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def make_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def test_a_sound_path_passes(short_tmp: Path) -> None:
    d = short_tmp / "run"
    d.mkdir(mode=0o700)
    make_socket(d / "ipcd.sock")
    check_socket_path(str(d / "ipcd.sock"), owners())
    os.chmod(d, 0o755)
    check_socket_path(str(d / "ipcd.sock"), owners())


@pytest.mark.parametrize(("mode", "why"), [(0o777, "writable by other users"), (0o775, "writable by its group")])
def test_a_writable_directory_is_refused(short_tmp: Path, mode: int, why: str) -> None:
    d = short_tmp / "open"
    d.mkdir()
    os.chmod(d, mode)
    make_socket(d / "ipcd.sock")
    with pytest.raises(Untrusted) as e:
        check_socket_path(str(d / "ipcd.sock"), owners())
    assert str(d) in str(e.value) and why in str(e.value) and "chmod go-w" in str(e.value)
    assert e.value.path == str(d)


def test_a_root_owned_sticky_directory_passes(short_tmp: Path) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to own a sticky directory")
    d = short_tmp / "sticky"
    d.mkdir()
    os.chmod(d, 0o1777)
    (d / "mine").mkdir(mode=0o700)
    make_socket(d / "mine" / "ipcd.sock")
    check_socket_path(str(d / "mine" / "ipcd.sock"), owners())


def test_symlinks(short_tmp: Path) -> None:
    real = short_tmp / "real"
    real.mkdir(mode=0o700)
    make_socket(real / "ipcd.sock")
    (short_tmp / "link").symlink_to(real)  # ours: followed, its target checked
    check_socket_path(str(short_tmp / "link" / "ipcd.sock"), owners())
    (real / "sock-link").symlink_to(real / "ipcd.sock")
    with pytest.raises(Untrusted, match="is a symlink: the socket must be the file itself"):
        check_socket_path(str(real / "sock-link"), owners())
    os.chmod(real, 0o777)  # the target fails: so does the path through the link
    with pytest.raises(Untrusted, match="writable by other users"):
        check_socket_path(str(short_tmp / "link" / "ipcd.sock"), owners())


def test_missing_is_no_daemon(short_tmp: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_socket_path(str(short_tmp / "nothere" / "ipcd.sock"), owners())


@needs_root
def test_someone_elses_directory_symlink_or_socket_is_refused(short_tmp: Path) -> None:
    theirs = short_tmp / "theirs"
    theirs.mkdir(mode=0o700)
    make_socket(theirs / "ipcd.sock")
    os.chown(theirs, ATTACKER, ATTACKER)
    with pytest.raises(Untrusted, match=f"owned by uid {ATTACKER}"):
        check_socket_path(str(theirs / "ipcd.sock"), owners())
    mine = short_tmp / "mine"
    mine.mkdir(mode=0o755)
    make_socket(mine / "ipcd.sock")
    os.chown(mine / "ipcd.sock", ATTACKER, ATTACKER)
    with pytest.raises(Untrusted, match="not your ipcd's socket"):
        check_socket_path(str(mine / "ipcd.sock"), owners())
    (short_tmp / "their-link").symlink_to(short_tmp / "mine")
    os.lchown(short_tmp / "their-link", ATTACKER, ATTACKER)
    with pytest.raises(Untrusted, match="symlink owned by uid 1234"):
        check_socket_path(str(short_tmp / "their-link" / "x.sock"), owners())


# -- the attack, end to end --------------------------------------------------------------------


@pytest.fixture
def fake_ipcd() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Another user's /tmp/ipcd-VICTIM with a listening control socket and a log socket in it."""
    if not IS_ROOT:
        pytest.skip("needs root (CI runs as root): other uids")
    if SYSTEM_SOCKET.exists():
        pytest.skip("a system ipcd runs here: resolution rightly finds it first")
    d = Path(f"/tmp/ipcd-{VICTIM}")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o755)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        control.bind(str(d / "ipcd.sock"))
        control.listen(16)
        log.bind(str(d / "log.sock"))
        for p in (d, d / "ipcd.sock", d / "log.sock"):
            os.lchown(p, ATTACKER, ATTACKER)
        os.chmod(d / "ipcd.sock", 0o777)
        os.chmod(d / "log.sock", 0o777)
        yield control, log
    finally:
        control.close()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def as_victim(*args: str) -> tuple[int, str]:
    def child() -> tuple[int, str]:
        for name in ("XDG_RUNTIME_DIR", "IPCD_SOCKET", "IPCD_RUNTIME_DIR", "IPCD_LOG_SOCKET"):
            os.environ.pop(name, None)
        return ipcctl_in_process(*args)

    return run_as(VICTIM, VICTIM, child)


def nothing_reached(control: socket.socket, log: socket.socket) -> bool:
    return not select.select([control, log], [], [], 0.2)[0]


def test_ipcctl_refuses_a_runtime_dir_another_user_made(fake_ipcd: tuple[socket.socket, socket.socket]) -> None:
    control, log = fake_ipcd
    for args in (["kv", "set", "api/token", "SECRET"], ["status"], ["logs", "-f"], ["send", "a secret line"]):
        code, out = as_victim(*args)
        assert code == 3, (args, out)
        assert f"/tmp/ipcd-{VICTIM}" in out and f"owned by uid {ATTACKER}" in out, out
        assert "sudo rm -rf" in out and "Traceback" not in out
    assert nothing_reached(control, log)


def test_doctor_reports_it_as_a_problem(fake_ipcd: tuple[socket.socket, socket.socket]) -> None:
    control, log = fake_ipcd
    code, out = as_victim("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out)}
    assert checks["trust"]["status"] == "problem" and f"owned by uid {ATTACKER}" in checks["trust"]["message"]
    assert code != 0
    assert nothing_reached(control, log)


def test_log_handler_sends_nothing_there(fake_ipcd: tuple[socket.socket, socket.socket]) -> None:
    control, log = fake_ipcd

    def child() -> tuple[int, str]:
        for name in ("XDG_RUNTIME_DIR", "IPCD_SOCKET", "IPCD_RUNTIME_DIR", "IPCD_LOG_SOCKET"):
            os.environ.pop(name, None)
        from ipcd.client import LogHandler

        logging.raiseExceptions = False  # the handler reports through handleError; keep the child quiet
        h = LogHandler(ident="victim")
        logger = logging.getLogger("victim")
        logger.addHandler(h)
        logger.warning("the secret is %s", "SECRET")
        h.close()
        return 0, str(h.dropped)

    code, out = run_as(VICTIM, VICTIM, child)
    assert (code, out) == (0, "1")
    assert nothing_reached(control, log)
