"""`ipcctl doctor` against real daemons, real socket files and unit files in temporary dirs.

SYSTEMD_UNIT_PATH (which systemd itself honours) points the units check at a
temporary directory, so nothing depends on what the host has installed.
Under a real systemd manager, doctor is exercised by test_systemd_manager.py.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, Ipcd, ipcctl, ipcctl_in_process, needs_root, run_as, wait_for


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    d = tmp_path / "units"
    d.mkdir()
    return d


def doctor(*args: str, unit_dir: Path, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """(exit code, the checks from --json, the human output of a second run)."""
    full_env = {"SYSTEMD_UNIT_PATH": str(unit_dir), **(env or {})}  # no trailing ":": only that dir
    res = ipcctl(*args, "doctor", "--json", env=full_env)
    assert "Traceback" not in res.stderr, res.stderr
    checks = json.loads(res.stdout)
    human = ipcctl(*args, "doctor", env=full_env)
    assert human.returncode == res.returncode
    return res.returncode, checks, human.stdout


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in checks}


def test_healthy_daemon(ipcd: Ipcd, unit_dir: Path) -> None:
    code, checks, human = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 0, human
    assert all(set(c) == {"check", "status", "message", "fix"} for c in checks)
    assert all(c["status"] in ("ok", "warning", "problem") for c in checks)
    c = by_name(checks)
    assert c["socket"]["status"] == "ok" and ipcd.sock in c["socket"]["message"]
    assert c["reachable"]["status"] == "ok" and f"pid {ipcd.proc.pid}" in c["reachable"]["message"]
    assert c["control-socket"]["status"] == "ok" and "0600" in c["control-socket"]["message"]
    assert c["access"]["status"] == "ok"
    assert c["log-socket"]["status"] == "ok" and "0666" in c["log-socket"]["message"]
    assert c["activation"]["status"] == "ok" and "own sockets" in c["activation"]["message"]
    assert c["watchdog"]["status"] == "ok" and "off" in c["watchdog"]["message"]
    assert c["store"]["status"] == "ok" and str(ipcd.state_dir) in c["store"]["message"]
    assert c["units"]["status"] == "warning" and "install-units" in c["units"]["fix"]
    # One line per check: status, name, explanation (and the fix where there is one).
    lines = human.splitlines()
    assert len(lines) == len(checks)
    for line, check in zip(lines, checks, strict=True):
        assert line.split()[0] == check["status"] and line.split()[1] == check["check"] + ":"
        assert (("; fix: " + check["fix"]) in line) if check["fix"] else "fix:" not in line


def test_global_json_flag_works_too(ipcd: Ipcd, unit_dir: Path) -> None:
    res = ipcctl("--json", "--socket", ipcd.sock, "doctor", env={"SYSTEMD_UNIT_PATH": str(unit_dir)})
    assert res.returncode == 0
    assert {c["check"] for c in json.loads(res.stdout)} >= {"reachable", "store", "units"}


def test_no_socket_at_the_path_exits_3_and_still_checks_offline(short_tmp: Path, unit_dir: Path) -> None:
    code, checks, human = doctor("--socket", str(short_tmp / "none.sock"), unit_dir=unit_dir)
    assert code == 3, human
    c = by_name(checks)
    assert c["reachable"]["status"] == "problem" and "not running" in c["reachable"]["message"]
    assert "ENOENT" in c["reachable"]["message"] and "systemctl start ipcd.socket" in c["reachable"]["fix"]
    assert "units" in c and "config" in c  # the offline checks ran
    assert "store" not in c  # the online ones could not


def test_no_socket_found_names_the_paths_tried(short_tmp: Path, unit_dir: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(short_tmp), "IPCD_SOCKET": "", "IPCD_RUNTIME_DIR": ""}
    if os.path.exists("/run/ipcd/ipcd.sock"):
        pytest.skip("this host has a system ipcd socket")
    code, checks, _ = doctor(unit_dir=unit_dir, env=env)
    assert code == 3
    c = by_name(checks)["socket"]
    assert c["status"] == "problem" and "/run/ipcd/ipcd.sock" in c["message"] and c["fix"]


def test_stale_socket_is_explained(short_tmp: Path, unit_dir: Path) -> None:
    path = str(short_tmp / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)  # closed without anyone listening: a crashed daemon's leftover
    os.chmod(path, 0o660)
    code, checks, _ = doctor("--socket", path, unit_dir=unit_dir)
    assert code == 3
    c = by_name(checks)
    assert "refused" in c["reachable"]["message"] and "stale" in c["reachable"]["message"]
    assert "ECONNREFUSED" in c["reachable"]["message"] and "restart" in c["reachable"]["fix"]
    assert c["control-socket"]["status"] == "ok"  # the file itself is fine


def test_world_accessible_control_socket_is_a_problem(ipcd: Ipcd, unit_dir: Path) -> None:
    os.chmod(ipcd.sock, 0o666)
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 1
    c = by_name(checks)["control-socket"]
    assert c["status"] == "problem" and "0666" in c["message"] and "chmod 0660" in c["fix"]


def test_log_socket_others_cannot_write(ipcd: Ipcd, unit_dir: Path) -> None:
    os.chmod(ipcd.log_sock, 0o600)
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 0  # root may still write: a warning, not a problem
    c = by_name(checks)["log-socket"]
    assert c["status"] == "warning" and "other users cannot log" in c["message"] and "0666" in c["fix"]


def test_log_socket_missing(ipcd: Ipcd, unit_dir: Path) -> None:
    os.unlink(ipcd.log_sock)
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 1
    assert by_name(checks)["log-socket"]["status"] == "problem"


@needs_root
def test_caller_outside_the_group_is_told_to_join_it(make_ipcd, short_tmp: Path, unit_dir: Path) -> None:
    import grp

    group = grp.getgrnam("daemon")  # exists on Debian; nobody is not in it
    d: Ipcd = make_ipcd('[control]\nsocket_group = "daemon"\nsocket_mode = "0660"\n').start()
    assert os.lstat(d.sock).st_gid == group.gr_gid

    def as_nobody() -> tuple[int, str]:
        # HOME stays root's (closed to nobody), and unit_dir sits in pytest's 0700 tmp_path:
        # what doctor cannot look into, it must say so, not crash.
        os.environ["SYSTEMD_UNIT_PATH"] = str(unit_dir)
        return ipcctl_in_process("--socket", d.sock, "doctor", "--json")

    code, out = run_as(65534, 65534, as_nobody)
    assert code == 1 and out, (code, out)
    c = by_name(json.loads(out))
    assert c["reachable"]["status"] == "problem" and "permission denied" in c["reachable"]["message"]
    assert c["access"]["status"] == "problem" and "not in group daemon" in c["access"]["message"]
    assert "usermod -aG daemon nobody" in c["access"]["fix"]
    assert c["control-socket"]["status"] == "ok"  # 0660 group daemon is as configured
    assert c["config"]["status"] in ("ok", "warning") and c["units"]["status"] == "warning"


def test_watchdog_state_is_shown(make_ipcd, unit_dir: Path) -> None:
    d: Ipcd = make_ipcd(env={"WATCHDOG_USEC": "1000000"}).start()
    wait_for(lambda: d.call("status")["watchdog"]["pings"] >= 1, 10, "a first ping")
    code, checks, _ = doctor("--socket", d.sock, unit_dir=unit_dir)
    assert code == 0
    c = by_name(checks)["watchdog"]
    assert c["status"] == "ok" and "every 0.5 s" in c["message"] and "healthy" in c["message"]


def test_wedged_writer_shows_as_an_unhealthy_watchdog(make_ipcd, unit_dir: Path) -> None:
    d: Ipcd = make_ipcd(env={"WATCHDOG_USEC": "400000"}).start()
    locker = sqlite3.connect(d.state_dir / "ipcd.db", timeout=10, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>wedge", d.log_sock)
        wait_for(lambda: d.call("status")["watchdog"]["healthy"] is False, 10, "an unhealthy watchdog")
        code, checks, _ = doctor("--socket", d.sock, unit_dir=unit_dir)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert code == 1
    c = by_name(checks)["watchdog"]
    assert c["status"] == "problem" and "stuck" in c["message"] and "journalctl" in c["fix"]


def _write_units(
    unit_dir: Path, exec_start: str, names: tuple[str, ...] = ("ipcd.socket", "ipcd-log.socket", "ipcd.service")
) -> None:
    res = subprocess.run(
        [str(BIN / "ipcd"), "install-units", "--unit-dir", str(unit_dir), "--sysusers-dir", str(unit_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    svc = unit_dir / "ipcd.service"
    svc.write_text(svc.read_text().replace(f"ExecStart={BIN / 'ipcd'}", f"ExecStart={exec_start}"))
    for name in ("ipcd.socket", "ipcd-log.socket", "ipcd.service"):
        if name not in names:
            (unit_dir / name).unlink()


def test_units_with_a_missing_exec_start(ipcd: Ipcd, unit_dir: Path) -> None:
    _write_units(unit_dir, "/usr/bin/ipcd")  # the repository's file, copied as it is
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 1
    c = by_name(checks)["units"]
    assert c["status"] == "problem" and "ExecStart=/usr/bin/ipcd is not an executable" in c["message"]
    assert "install-units" in c["fix"]


def test_units_partly_installed(ipcd: Ipcd, unit_dir: Path) -> None:
    _write_units(unit_dir, str(BIN / "ipcd"), names=("ipcd.service",))
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 1
    c = by_name(checks)["units"]
    assert c["status"] == "problem" and "ipcd.socket" in c["message"] and "ipcd-log.socket" in c["message"]


def test_units_whose_interpreter_protect_home_hides(ipcd: Ipcd, unit_dir: Path) -> None:
    _write_units(unit_dir, str(BIN / "ipcd"))
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    c = by_name(checks)["units"]
    interpreter = os.path.realpath(sys.executable)
    if interpreter.startswith(("/root/", "/home/")):  # this venv: made from a Python in a home directory
        assert code == 1 and c["status"] == "problem"
        assert interpreter in c["message"] and "ProtectHome=yes" in c["message"] and "/usr/bin/python3" in c["fix"]
    else:
        assert code == 0 and c["status"] == "ok", c


def test_units_ok_with_an_executable_outside_home(ipcd: Ipcd, unit_dir: Path) -> None:
    _write_units(unit_dir, "/usr/bin/env ipcd")  # an ELF binary outside /home: nothing hides it
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir)
    assert code == 0
    c = by_name(checks)["units"]
    assert c["status"] == "ok" and "ExecStart=/usr/bin/env" in c["message"] and str(unit_dir) in c["message"]


def test_user_units(ipcd: Ipcd, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    res = subprocess.run(
        [str(BIN / "ipcd"), "install-units", "--user"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "XDG_CONFIG_HOME": str(cfg)},
    )
    assert res.returncode == 0, res.stderr
    res = ipcctl("--socket", ipcd.sock, "--user", "doctor", "--json", env={"XDG_CONFIG_HOME": str(cfg)})
    c = by_name(json.loads(res.stdout))["units"]
    assert c["status"] == "ok" and str(cfg / "systemd" / "user" / "ipcd.service") in c["message"], c


def test_bad_config_is_a_problem(ipcd: Ipcd, tmp_path: Path, unit_dir: Path) -> None:
    bad = tmp_path / "ipcd.toml"
    bad.write_text("[control]\nmax_connections = 0\n")
    code, checks, _ = doctor("--socket", ipcd.sock, unit_dir=unit_dir, env={"IPCD_CONFIG": str(bad)})
    assert code == 1
    c = by_name(checks)["config"]
    assert c["status"] == "problem" and f"{bad}:2" in c["message"] and "--check-config" in c["fix"]


def test_python_dash_m_ipcd_cli_has_doctor(ipcd: Ipcd, unit_dir: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ipcd.ctl", "--socket", ipcd.sock, "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SYSTEMD_UNIT_PATH": str(unit_dir)},
    )
    assert res.returncode == 0, res.stderr
