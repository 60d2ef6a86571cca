"""Where ipcd lives: the directory rules and the names the daemon, the client and ipcctl share.

Apart from `config` so that a client (ipcctl, `ipcd.client`) finds the
socket without loading the config's dataclasses and TOML reader: what a
plain `ipcctl status` imports is what it waits for.  Pure: the environment
and the uid are passed in.  DESIGN.md "Processes and sockets" fixes the
order in which directories are chosen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Names the daemon, the client and ipcctl agree on.
SYSTEM_RUNTIME_DIR = Path("/run/ipcd")  # root's runtime dir; the system units' sockets
CONTROL_SOCKET_NAME = "ipcd.sock"
LOG_SOCKET_NAME = "log.sock"
UNIT_NAMES = ("ipcd.socket", "ipcd-log.socket", "ipcd.service")
PROTECT_HOME_DIRS = ("/home/", "/root/", "/run/user/")  # what ProtectHome=yes hides (systemd.exec(5))


# -- directories (DESIGN.md "Processes and sockets") -----------------------


def runtime_dir(option: str | None, env: Mapping[str, str], uid: int) -> Path:
    for value in (option, env.get("IPCD_RUNTIME_DIR"), _first(env.get("RUNTIME_DIRECTORY"))):
        if value:
            return Path(value)
    if uid == 0:
        return SYSTEM_RUNTIME_DIR
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "ipcd"
    return Path(f"/tmp/ipcd-{uid}")


def state_dir(option: str | None, env: Mapping[str, str], uid: int) -> Path:
    for value in (option, env.get("IPCD_STATE_DIR"), _first(env.get("STATE_DIRECTORY"))):
        if value:
            return Path(value)
    if uid == 0:
        return Path("/var/lib/ipcd")
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "ipcd"
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".local/state/ipcd"


def config_path(option: str | None, env: Mapping[str, str], uid: int) -> tuple[Path | None, bool]:
    """The config file to read, and whether it was named (then it must exist)."""
    for value in (option, env.get("IPCD_CONFIG")):
        if value:
            return Path(value), True
    if env.get("CONFIGURATION_DIRECTORY"):
        return Path(_first(env["CONFIGURATION_DIRECTORY"]) or "") / "ipcd.toml", False
    if uid == 0:
        return Path("/etc/ipcd/ipcd.toml"), False
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or os.path.expanduser("~")) / ".config")
    return Path(base) / "ipcd" / "ipcd.toml", False


def _first(value: str | None) -> str | None:
    # systemd joins several directories with ":" (systemd.exec(5), RuntimeDirectory=).
    return value.split(":")[0] if value else None
