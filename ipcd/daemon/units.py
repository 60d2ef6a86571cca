"""`ipcd install-units`: the systemd units in systemd/, with this install's paths.

The unit files name /usr/bin/ipcd and /usr/bin/ipcctl, as a distribution
package would install them; someone who installed with pip has them in a
venv or ~/.local, so the files are written with the real paths, and the
user is told the `systemctl` commands to run next.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ipcd.config import PROTECT_HOME_DIRS as HOME_DIRS
from ipcd.config import UNIT_NAMES as SYSTEM_UNITS

PLACEHOLDER_IPCD = "/usr/bin/ipcd"
PLACEHOLDER_IPCCTL = "/usr/bin/ipcctl"


@dataclass
class Plan:
    files: dict[Path, str]  # destination -> contents
    next_steps: list[str]
    warnings: list[str]


def command_for(name: str) -> str:
    """How systemd should start `name` (ipcd or ipcctl) of this installation."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    module = "ipcd" if name == "ipcd" else "ipcd.ctl"
    return f"{shlex.quote(sys.executable)} -m {module}"


def template(name: str, user: bool) -> str:
    base = resources.files("ipcd") / "unitfiles"
    return (base / "user" / name if user else base / name).read_text(encoding="utf-8")


def render(text: str, ipcd_cmd: str, ipcctl_cmd: str) -> str:
    return text.replace(PLACEHOLDER_IPCCTL, ipcctl_cmd).replace(PLACEHOLDER_IPCD, ipcd_cmd)


def plan(user: bool, unit_dir: Path | None = None, sysusers_dir: Path | None = None) -> Plan:
    ipcd_cmd, ipcctl_cmd = command_for("ipcd"), command_for("ipcctl")
    if unit_dir is None:
        if user:
            config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            unit_dir = Path(config_home) / "systemd" / "user"
        else:
            unit_dir = Path("/etc/systemd/system")
    files = {unit_dir / name: render(template(name, user), ipcd_cmd, ipcctl_cmd) for name in SYSTEM_UNITS}
    warnings = []
    ctl = "systemctl --user" if user else "systemctl"
    steps = []
    if not user:
        sysusers = (sysusers_dir or Path("/etc/sysusers.d")) / "ipcd.conf"
        files[sysusers] = template("ipcd.sysusers.conf", False)
        steps.append(f"systemd-sysusers {sysusers}    # creates user and group ipcd")
        hidden = hidden_by_protect_home(ipcd_cmd)
        if hidden is not None:
            warnings.append(
                f"{hidden} is under a home directory, which ipcd.service hides (ProtectHome=yes): install ipcd "
                "outside /home and /root (for example a venv in /opt/ipcd made from /usr/bin/python3), or add "
                "a drop-in with ProtectHome=read-only"
            )
    steps += [
        f"{ctl} daemon-reload",
        f"{ctl} enable --now ipcd.socket ipcd-log.socket",
        f"ipcctl{' --user' if user else ''} status",
    ]
    return Plan(files, steps, warnings)


def hidden_by_protect_home(ipcd_cmd: str) -> str | None:
    """The first path ipcd needs that ProtectHome=yes hides, if any.

    Not only the command: a venv's interpreter is a symlink to the Python it
    was made from (pyenv's lives in ~/.pyenv), and its stdlib is there too;
    `pip install --user` puts this package in ~/.local, behind `python3 -m ipcd`.
    """
    exe = shlex.split(ipcd_cmd)[0]
    package = os.path.dirname(os.path.realpath(__file__))
    for path in (exe, os.path.realpath(exe), os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, package):
        if path.startswith(HOME_DIRS) or path in ("/home", "/root"):
            return path
    return None


def write(p: Plan) -> None:
    for path, text in p.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
