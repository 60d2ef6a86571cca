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

SYSTEM_UNITS = ("ipcd.socket", "ipcd-log.socket", "ipcd.service")
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
    module = "ipcd" if name == "ipcd" else "ipcd.cli"
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
        exe = ipcd_cmd.split()[0]
        if exe.startswith(("/home/", "/root/")):
            warnings.append(
                f"{exe} is under a home directory, which ipcd.service hides (ProtectHome=yes): install ipcd "
                "outside /home and /root (for example a venv in /opt/ipcd), or add a drop-in with "
                "ProtectHome=read-only"
            )
    steps += [f"{ctl} daemon-reload", f"{ctl} enable --now ipcd.socket ipcd-log.socket",
              f"ipcctl{' --user' if user else ''} status"]  # fmt: skip
    return Plan(files, steps, warnings)


def write(p: Plan) -> None:
    for path, text in p.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
