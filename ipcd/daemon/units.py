"""`ipcd install-units`: the systemd units in systemd/, with this install's paths, and the man pages.

The unit files name /usr/bin/ipcd and /usr/bin/ipcctl, as a distribution
package would install them; someone who installed with pip has them in a
venv or ~/.local, so the files are written with the real paths, and the
user is told the `systemctl` commands to run next.  The man pages
(ipcctl(1), ipcd(8), ipcd.toml(5), shipped in `ipcd/manpages`) go to
/usr/local/share/man (`--user`: $XDG_DATA_HOME/man).  A venv's bin is not
on PATH: the plan says where `ipcd` and `ipcctl` are, and `--link` links
them into /usr/local/bin (`--user`: ~/.local/bin).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ipcd.config import PROTECT_HOME_DIRS as HOME_DIRS
from ipcd.config import UNIT_NAMES as SYSTEM_UNITS

PLACEHOLDER_IPCD = "/usr/bin/ipcd"
PLACEHOLDER_IPCCTL = "/usr/bin/ipcctl"


MAN_PAGES = ("ipcctl.1", "ipcd.8", "ipcd.toml.5")
COMMANDS = ("ipcd", "ipcctl")


@dataclass
class Plan:
    files: dict[Path, str]  # destination -> contents
    next_steps: list[str]
    warnings: list[str]
    links: dict[Path, Path] = field(default_factory=dict)  # link -> what it points at


def default_man_dir(user: bool) -> Path:
    if user:
        return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "man"
    return Path("/usr/local/share/man")


def default_bin_dir(user: bool) -> Path:
    return Path.home() / ".local" / "bin" if user else Path("/usr/local/bin")


def man_pages(man_dir: Path) -> dict[Path, str]:
    """Each shipped page, at its place under `man_dir` (manN/NAME.N)."""
    base = resources.files("ipcd") / "manpages"
    return {
        man_dir / f"man{name.rsplit('.', 1)[1]}" / name: (base / name).read_text(encoding="utf-8") for name in MAN_PAGES
    }


def on_path(name: str, exe: Path) -> bool:
    """Whether `name` on PATH is `exe`."""
    found = shutil.which(name)
    return found is not None and os.path.realpath(found) == os.path.realpath(exe)


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


def plan(
    user: bool,
    unit_dir: Path | None = None,
    sysusers_dir: Path | None = None,
    man_dir: Path | None = None,
    link_dir: Path | None = None,
) -> Plan:
    """What to write; `link_dir`: also link ipcd and ipcctl there."""
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
    files.update(man_pages(man_dir or default_man_dir(user)))
    links, ipcctl_run = _commands(user, link_dir, warnings)
    steps += [
        f"{ctl} daemon-reload",
        f"{ctl} enable --now ipcd.socket ipcd-log.socket",
        f"{ipcctl_run}{' --user' if user else ''} status",
    ]
    return Plan(files, steps, warnings, links)


def _commands(user: bool, link_dir: Path | None, warnings: list[str]) -> tuple[dict[Path, Path], str]:
    """The links to make, and how to run ipcctl after the install; says where the commands are."""
    beside = Path(sys.executable).parent
    exes = {name: beside / name for name in COMMANDS if (beside / name).is_file()}
    if link_dir is not None:
        return {link_dir / name: exe for name, exe in exes.items()}, "ipcctl"
    if "ipcctl" not in exes or on_path("ipcctl", exes["ipcctl"]):
        return {}, "ipcctl"
    flag = " --user" if user else ""
    warnings.append(
        f"ipcd and ipcctl are in {beside}, which is not on PATH: run them by that path, add it to PATH, "
        f"or run `ipcd install-units{flag} --link` to link them into {default_bin_dir(user)}"
    )
    return {}, shlex.quote(str(exes["ipcctl"]))


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


def write(p: Plan) -> list[str]:
    """Write the files and make the links; what could not be done (a link over a file that is no link)."""
    for path, text in p.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    skipped = []
    for link, target in p.links.items():
        if link.exists() and not link.is_symlink():
            skipped.append(f"{link} exists and is not a link: left as it is")
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
    return skipped
