"""`ipcd.client.resolve`: which socket the client and ipcctl talk to (DESIGN.md "Socket resolution in ipcctl")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import IS_ROOT, Ipcd, ipcctl

from ipcd.client import Client, Unreachable


def test_finds_the_socket_as_ipcctl_does(ipcd: Ipcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPCD_SOCKET", ipcd.sock)
    with Client() as c:
        assert c.path == ipcd.sock
        assert c.status()["pid"] == ipcd.proc.pid
    monkeypatch.delenv("IPCD_SOCKET")
    monkeypatch.setenv("IPCD_RUNTIME_DIR", str(ipcd.run_dir))
    with Client() as c:
        assert c.ping()["pong"] is True


def test_unreachable_names_the_socket(short_tmp: Path) -> None:
    path = str(short_tmp / "none.sock")
    c = Client(path)
    with pytest.raises(Unreachable) as e:
        c.status()
    assert path in str(e.value) and "is ipcd running?" in str(e.value)
    c.close()


def test_socket_from_environment(ipcd: Ipcd) -> None:
    res = ipcctl("--json", "status", env={"IPCD_SOCKET": ipcd.sock})
    assert json.loads(res.stdout)["pid"] == ipcd.proc.pid
    res = ipcctl("--json", "status", env={"IPCD_RUNTIME_DIR": str(ipcd.run_dir)})
    assert json.loads(res.stdout)["pid"] == ipcd.proc.pid


def test_nothing_found_names_paths_tried(short_tmp) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPCD_")}
    env["XDG_RUNTIME_DIR"] = str(short_tmp)
    if os.path.exists("/run/ipcd/ipcd.sock"):
        return  # a system ipcd runs on this machine: resolution rightly finds it
    res = ipcctl("status", env=env)
    assert res.returncode == 3
    assert "/run/ipcd/ipcd.sock" in res.stderr
    if not IS_ROOT:
        assert str(short_tmp / "ipcd" / "ipcd.sock") in res.stderr


def test_user_means_the_xdg_runtime_dir_whoever_runs_it(make_ipcd, short_tmp: Path) -> None:
    """`--user`: $XDG_RUNTIME_DIR/ipcd/ipcd.sock (where the user units bind it), for root too."""
    d: Ipcd = make_ipcd()
    xdg = short_tmp / "xdg"
    xdg.mkdir(mode=0o700)
    d.run_dir = xdg / "ipcd"
    d.start()
    res = ipcctl("--user", "--json", "status", env={"XDG_RUNTIME_DIR": str(xdg)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["pid"] == d.proc.pid
