"""sdbox: a real, throw-away systemd manager booted inside namespaces, for tests.

systemd is not PID 1 on the machines that run this suite, yet ipcd's users meet
it through `systemctl`.  `SdBox` boots the installed systemd as PID 1 of fresh
pid/mount/uts/ipc/net/cgroup namespaces, over a volatile overlay of the host
root, so that tests can install units, start them, connect to their sockets and
read `systemctl show` and the journal without touching the host:

* every write lands in a tmpfs overlay upper layer that lives only in the
  box's mount namespace;
* `/tmp` and `/run` are private tmpfs mounts, and tmpfiles' `D /tmp` rule
  (`tmp.conf`) is masked, so `systemd-tmpfiles --remove --boot` can never wipe
  the host's `/tmp`;
* `/proc/sys` and `/sys` are read-only, dangerous capabilities are dropped from
  the bounding set, `/dev` is a private tmpfs with a handful of nodes, and
  generators are masked.

It is not a security boundary (the box keeps CAP_SYS_ADMIN in the initial user
namespace): its purpose is to make accidental host modification impossible.

Host paths listed in `binds` (the project checkout, its venv) are bound
read-only at the same path in the box.  State lives in
`/tmp/sdbox-ipcd/NAME` (`console.log` there is the box's console); the box's
cgroup is `sdbox-NAME` under the host's cgroup2 mount.  Boxes whose owner
process is gone (a killed test run) are removed by the next `start()`.

Usage::

    box = SdBox("pytest-1234", binds=[checkout, venv])
    box.start()
    try:
        box.write_file("/etc/systemd/system/x.service", "...")
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "start", "x.service")
        box.wait_unit("x.service", lambda s: s["ActiveState"] == "active", 10, "x active")
    finally:
        box.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["PROGRAMS", "SdBox", "SdBoxError", "sdbox_available", "cleanup_stale"]

STATE_BASE = Path("/tmp/sdbox-ipcd")
SYSTEMD = "/usr/lib/systemd/systemd"
STOP_TIMEOUT_S = 8.0
BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
_TOOLS = ("unshare", "nsenter", "setpriv", "pivot_root", "mount", "umount", "mknod", "bash")
# What a fresh machine may lack, for the tests' needs_program(); Debian always has the rest of _TOOLS.
PROGRAMS = (SYSTEMD, "unshare", "nsenter", "setpriv")
_DROPPED_CAPS = (
    "-sys_module,-sys_time,-sys_boot,-sys_rawio,-sys_pacct,-syslog,-wake_alarm,-block_suspend,-mac_admin,-mac_override"
)
_PR_SET_PDEATHSIG = 1


class SdBoxError(RuntimeError):
    """The box could not boot, or misbehaved in a way a test cannot act on."""


# ---------------------------------------------------------------------------
# host probing


def _cgroup2_mount() -> tuple[Path, str] | None:
    """(mount point, root of the mount within our cgroup namespace) of the cgroup2 hierarchy.

    Prefers a pure cgroup2 `/sys/fs/cgroup`, then the hybrid `/sys/fs/cgroup/unified`,
    then any other cgroup2 mount.
    """
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if not post.startswith("cgroup2 "):
                    continue
                fields = pre.split()
                root, mnt = _unescape(fields[3]), _unescape(fields[4])
                found[mnt] = root  # the last one listed is the one on top
    except OSError:
        return None
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in found:
            return Path(preferred), found[preferred]
    for mnt, root in sorted(found.items()):
        return Path(mnt), root
    return None


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def sdbox_available() -> str | None:
    """None if a box can boot here, else the reason why not (for `pytest.skip`)."""
    if os.geteuid() != 0:
        return "sdbox needs root (namespaces, mounts, cgroups)"
    missing = [t for t in _TOOLS if shutil.which(t, path=os.environ.get("PATH", "") + ":" + BOX_PATH) is None]
    if missing:
        return f"sdbox needs {', '.join(missing)} (util-linux/coreutils)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError as e:
        return f"cannot read /proc/filesystems: {e}"
    if not re.search(r"\boverlay$", filesystems, re.M):
        return "sdbox needs overlayfs (not in /proc/filesystems)"
    if _cgroup2_mount() is None:
        return "sdbox needs a cgroup2 mount (none in /proc/self/mountinfo)"
    if not os.access(SYSTEMD, os.X_OK):
        return f"sdbox needs systemd ({SYSTEMD} not found)"
    return None


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + BOX_PATH)
    if found is None:
        raise SdBoxError(f"{name} not found")
    return found


# ---------------------------------------------------------------------------
# processes, cgroups, state


def _starttime(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _in_cgroup(pid: int, cg_rel: str) -> bool:
    """True if `pid` sits in the cgroup2 cgroup `cg_rel` or below it (guards against pid reuse)."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("0::"):
            path = line[3:]
            return path == cg_rel or path.startswith(cg_rel + "/")
    return False


def _signal_if_in_cgroup(pid: int, sig: int, cg_rel: str) -> bool:
    if not _in_cgroup(pid, cg_rel):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _cgroup_pids(cg: Path) -> list[int]:
    pids: list[int] = []
    if not cg.is_dir():
        return pids
    for dirpath, _dirs, files in os.walk(cg):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()]
    return pids


def _kill_cgroup(cg: Path, cg_rel: str) -> None:
    """SIGKILL whatever still runs in `cg` (cgroup.kill where the kernel has it)."""
    if not cg.is_dir():
        return
    kill_file = cg / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
        return
    for pid in _cgroup_pids(cg):
        _signal_if_in_cgroup(pid, signal.SIGKILL, cg_rel)


def _remove_cgroup(cg: Path, cg_rel: str, timeout_s: float = 5.0) -> None:
    """rmdir `cg` depth first; dying processes may keep it busy for a moment."""
    deadline = time.monotonic() + timeout_s
    while cg.is_dir():
        busy: OSError | None = None
        for dirpath, _dirs, _files in sorted(os.walk(cg), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as e:
                busy = e
        if not cg.is_dir():
            return
        if time.monotonic() > deadline:
            raise SdBoxError(f"cannot remove cgroup {cg}: {busy}; pids left: {_cgroup_pids(cg)}")
        _kill_cgroup(cg, cg_rel)
        time.sleep(0.02)


def _rm_state(state: Path) -> None:
    """Remove a state dir, never crossing into another filesystem (a leaked mount)."""
    if not state.is_dir() or state.is_symlink():
        return
    dev = state.lstat().st_dev
    for dirpath, dirs, files in os.walk(state, topdown=False):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dirpath, f))
        for d in dirs:
            p = os.path.join(dirpath, d)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if st.st_dev != dev:
                raise SdBoxError(f"{p} is a mount point; not removing {state}")
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)
    os.rmdir(state)


def _state_base() -> Path:
    """/tmp/sdbox-ipcd, created 0700 and checked: /tmp is world-writable."""
    with contextlib.suppress(FileExistsError):
        STATE_BASE.mkdir(mode=0o700)
    st = STATE_BASE.lstat()
    if not (os.path.isdir(STATE_BASE) and not STATE_BASE.is_symlink() and st.st_uid == os.geteuid()):
        raise SdBoxError(f"{STATE_BASE} is not a directory owned by us")
    os.chmod(STATE_BASE, 0o700)
    return STATE_BASE


def cleanup_stale() -> list[str]:
    """Remove boxes whose owner process is gone (a killed run); returns their names."""
    removed: list[str] = []
    if not STATE_BASE.is_dir():
        return removed
    for state in sorted(STATE_BASE.iterdir()):
        if not state.is_dir() or state.is_symlink():
            continue
        try:
            owner_pid, owner_start = (state / "owner").read_text().split()
            alive = _starttime(int(owner_pid)) == owner_start
        except (OSError, ValueError):
            # No owner file: a start() that died right after mkdir, or garbage.
            # Leave a fresh one alone (another run may be writing it right now).
            try:
                alive = time.time() - state.stat().st_mtime < 60
            except OSError:
                continue
        if alive:
            continue
        try:
            cg_line = (state / "cgroup").read_text().split("\n")
            cg, cg_rel = Path(cg_line[0]), cg_line[1]
        except (OSError, IndexError):
            cg = None
        try:
            if cg is not None and cg.name.startswith("sdbox-"):
                _kill_cgroup(cg, cg_rel)
                _remove_cgroup(cg, cg_rel)
            _rm_state(state)
        except (OSError, SdBoxError):
            continue  # best effort: a box that cannot be cleaned must not stop new ones
        removed.append(state.name)
    with contextlib.suppress(OSError):
        STATE_BASE.rmdir()
    return removed


def _pdeathsig_preexec(cg_procs: str) -> Callable[[], None]:
    """preexec_fn: join the box cgroup, die with our parent.  Everything is prepared before fork."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        # Join the cgroup *before* `unshare --cgroup`, so it becomes the box's cgroup root.
        fd = os.open(cg_procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        if prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# ---------------------------------------------------------------------------
# the box's init script (PID 1 of the new namespaces, before systemd)

_INIT = r"""#!/bin/bash
# sdbox init: runs as PID 1 of fresh namespaces, sets up the root, execs systemd.
set -euo pipefail
trap 'echo "sdbox-init: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
NAME=@NAME@
STATE=@STATE@
BINDS=(@BINDS@)
MACHINE_ID=@MACHINE_ID@
M=$STATE/mnt
R=$M/root
say() { echo "sdbox-init: $*"; }

say "root"
mount -t tmpfs -o mode=0755,size=2g sdbox-rw "$M"
mkdir -p "$M/upper" "$M/work" "$R"
mount -t overlay sdbox-root -o "lowerdir=/,upperdir=$M/upper,workdir=$M/work" "$R"

say "api filesystems"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in "$R/proc/sys" "$R/proc/sysrq-trigger"; do
    if [ -e "$p" ]; then
        mount --bind "$p" "$p"
        mount -o remount,bind,ro "$p"
    fi
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"

mount -t tmpfs -o mode=0755,size=4m,nosuid sdbox-dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
if [ -e /dev/net/tun ]; then mkdir -p "$R/dev/net"; mknod -m 666 "$R/dev/net/tun" c 10 200; fi
mkdir -m 755 "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev sdbox-shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"
mount --bind "$STATE/console.log" "$R/dev/console"

mount -t tmpfs -o mode=0755,size=256m,nosuid,nodev sdbox-run "$R/run"
mount -t tmpfs -o mode=1777,size=512m,nosuid,nodev sdbox-tmp "$R/tmp"

say "binds"
for b in "${BINDS[@]}"; do
    if [ -d "$b" ]; then mkdir -p "$R$b"; else mkdir -p "$(dirname "$R$b")"; touch "$R$b"; fi
    mount --rbind "$b" "$R$b"
    mount -o remount,bind,ro "$R$b"
done

say "config"
E=$R/etc
echo "$MACHINE_ID" > "$E/machine-id"
echo "sdbox-$NAME" > "$E/hostname"
mkdir -p "$E/systemd/system-generators" "$E/tmpfiles.d" "$E/systemd/system" \
    "$E/systemd/system.conf.d" "$E/systemd/journald.conf.d"
for d in /usr/lib/systemd/system-generators /lib/systemd/system-generators \
         /usr/local/lib/systemd/system-generators /etc/systemd/system-generators; do
    [ -d "$R$d" ] || continue
    for g in "$R$d"/*; do
        [ -e "$g" ] || [ -L "$g" ] || continue
        n=$(basename "$g")
        [ -L "$E/systemd/system-generators/$n" ] || ln -sfn /dev/null "$E/systemd/system-generators/$n"
    done
done
ln -sfn /dev/null "$E/tmpfiles.d/tmp.conf"
ln -sfn /dev/null "$E/systemd/system/systemd-journald-audit.socket"
cat > "$E/systemd/system.conf.d/sdbox.conf" <<'EOF'
[Manager]
ShowStatus=no
LogColor=no
DefaultTimeoutStopSec=5s
EOF
cat > "$E/systemd/journald.conf.d/sdbox.conf" <<'EOF'
[Journal]
Storage=volatile
ForwardToWall=no
EOF
cat > "$E/systemd/system/sdbox.target" <<'EOF'
[Unit]
Description=sdbox test box
Requires=sysinit.target
Wants=@WANTS@
After=sysinit.target @WANTS@
AllowIsolate=yes
EOF
echo "$NAME" > "$E/sdbox-name"

say "pivot"
cd "$R"
mkdir -p .sdbox-oldroot
pivot_root . .sdbox-oldroot
cd /
umount -l /.sdbox-oldroot
rmdir /.sdbox-oldroot
say "exec systemd"
exec env -i container=sdbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    setpriv --bounding-set @DROPPED_CAPS@ -- \
    @SYSTEMD@ --unit=sdbox.target --log-level=info --log-color=no --show-status=no
"""


def _init_script(name: str, state: Path, binds: Sequence[str], machine_id: str, dbus: bool = False) -> str:
    subst = {
        "@WANTS@": "systemd-journald.socket systemd-journald-dev-log.socket" + (" dbus.socket" if dbus else ""),
        "@NAME@": shlex.quote(name),
        "@STATE@": shlex.quote(str(state)),
        "@BINDS@": " ".join(shlex.quote(b) for b in binds),
        "@MACHINE_ID@": machine_id,
        "@DROPPED_CAPS@": _DROPPED_CAPS,
        "@SYSTEMD@": SYSTEMD,
    }
    text = _INIT
    for k, v in subst.items():
        text = text.replace(k, v)
    return text


# ---------------------------------------------------------------------------
# the box


class SdBox:
    """One throw-away systemd manager.  See the module docstring."""

    def __init__(self, name: str, binds: Iterable[str | os.PathLike[str]] = (), dbus: bool = False) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad box name {name!r}: [A-Za-z0-9_.-], at most 41 characters")
        self.name = name
        self.binds: list[str] = []
        for b in binds:
            p = os.path.realpath(b)
            if not os.path.exists(p):
                raise ValueError(f"bind source {b} does not exist")
            if p == "/" or ":" in p or "\n" in p:
                raise ValueError(f"cannot bind {p}")
            self.binds.append(p)
        self.dbus = dbus  # also start dbus.socket (systemd-run --wait, busctl need the system bus)
        self.state = STATE_BASE / name
        self.console = self.state / "console.log"
        self.cg: Path | None = None
        self.cg_rel = ""
        self.unshare: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.boot_s: float | None = None
        self.system_state: str | None = None
        self._owns_state = False

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> SdBox:
        """Boot the box; return once `systemctl is-system-running --wait` says running/degraded."""
        reason = sdbox_available()
        if reason is not None:
            raise SdBoxError(reason)
        if self.unshare is not None:
            raise SdBoxError(f"box {self.name} already started")
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        cleanup_stale()
        for attempt in range(3):
            _state_base()
            try:
                self.state.mkdir(mode=0o700)
                self._owns_state = True
                break
            except FileExistsError:
                raise SdBoxError(f"a box named {self.name} exists already ({self.state})") from None
            except FileNotFoundError:  # another run's stop() removed the empty base just now
                if attempt == 2:
                    raise
        try:
            self._launch()
            self._wait_booted(deadline)
        except BaseException:
            self.stop()
            raise
        self.boot_s = time.monotonic() - t0
        return self

    def _launch(self) -> None:
        (self.state / "owner").write_text(f"{os.getpid()} {_starttime(os.getpid())}\n")
        (self.state / "mnt").mkdir()
        self.console.touch(mode=0o600)
        mount = _cgroup2_mount()
        assert mount is not None
        mnt, mnt_root = mount
        cg_dir = f"sdbox-{self.name}"
        cg = mnt / cg_dir
        cg_rel = (mnt_root.rstrip("/") + "/" + cg_dir) if mnt_root != "/" else "/" + cg_dir
        try:
            cg.mkdir()
        except FileExistsError:
            raise SdBoxError(f"cgroup {cg} exists already (not ours: left alone)") from None
        # Ours from here on: stop(), or cleanup_stale() after a killed run, removes it.
        self.cg, self.cg_rel = cg, cg_rel
        (self.state / "cgroup").write_text(f"{cg}\n{cg_rel}\n")
        init = self.state / "init.sh"
        init.write_text(_init_script(self.name, self.state, self.binds, uuid.uuid4().hex, self.dbus))
        argv = [
            _tool("unshare"),
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--cgroup",
            "--propagation",
            "private",
            "--",
            _tool("bash"),
            str(init),
        ]
        env = {"PATH": BOX_PATH, "LANG": "C.UTF-8"}
        with open(self.console, "ab", buffering=0) as out:
            self.unshare = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd="/",
                env=env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(str(self.cg / "cgroup.procs")),
            )

    def _wait_booted(self, deadline: float) -> None:
        assert self.unshare is not None
        u = self.unshare.pid
        children = Path(f"/proc/{u}/task/{u}/children")
        # 1. the box's PID 1 is unshare's only child
        while self.pid is None:
            self._check_alive("the box's PID 1 to appear")
            with contextlib.suppress(OSError, ValueError):
                kids = children.read_text().split()
                if kids:
                    self.pid = int(kids[0])
                    break
            self._tick(deadline, "the box's PID 1 to appear")
        # 2. PID 1 has pivoted into the overlay and exec'd systemd (before that,
        #    /proc/PID/root is the *host* root: never talk to the host's manager).
        host_root = os.stat("/")
        marker = self.root / "etc/sdbox-name"
        while True:
            self._check_alive("systemd to start")
            with contextlib.suppress(OSError):
                st = os.stat(self.root)
                if (
                    (st.st_dev, st.st_ino) != (host_root.st_dev, host_root.st_ino)
                    and os.readlink(f"/proc/{self.pid}/exe") == SYSTEMD
                    and marker.read_text().strip() == self.name
                    and (self.root / "run/systemd/private").exists()
                ):
                    break
            self._tick(deadline, "systemd's private bus socket")
        # 3. the manager has finished booting
        left = max(1.0, deadline - time.monotonic())
        try:
            res = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=left)
        except subprocess.TimeoutExpired:
            raise SdBoxError(
                self._why(f"systemctl is-system-running --wait did not return within {left:.1f} s")
            ) from None
        state = res.stdout.strip()
        if state not in ("running", "degraded"):
            raise SdBoxError(self._why(f"box state is {state!r} (rc={res.returncode}, stderr={res.stderr.strip()!r})"))
        self.system_state = state

    def _tick(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise SdBoxError(self._why(f"timed out waiting for {what}"))
        time.sleep(0.005)

    def _check_alive(self, what: str) -> None:
        assert self.unshare is not None
        if self.unshare.poll() is not None:
            raise SdBoxError(self._why(f"the box exited (rc={self.unshare.returncode}) while waiting for {what}"))

    def _why(self, msg: str, lines: int = 40) -> str:
        return f"sdbox {self.name}: {msg}\n--- tail of {self.console} ---\n{self.console_tail(lines)}"

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console.log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Halt the box (SIGRTMIN+3), SIGKILL it after `timeout_s`, then remove its cgroup and state.

        Idempotent; also fine after `systemctl poweroff` inside the box.
        """
        try:
            if self.unshare is not None:
                if self.pid is not None and self.unshare.poll() is None:
                    _signal_if_in_cgroup(self.pid, signal.SIGRTMIN + 3, self.cg_rel)
                    try:
                        self.unshare.wait(timeout_s)
                    except subprocess.TimeoutExpired:
                        _signal_if_in_cgroup(self.pid, signal.SIGKILL, self.cg_rel)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.unshare.wait(2.0)
                if self.unshare.poll() is None:
                    # No PID 1 yet (boot failed early), or it did not go: kill unshare
                    # itself; its --kill-child then takes the whole pid namespace down.
                    _signal_if_in_cgroup(self.unshare.pid, signal.SIGKILL, self.cg_rel)
                    self.unshare.wait(10.0)
        finally:
            self.unshare = None
            self.pid = None
            if self.cg is not None:
                _kill_cgroup(self.cg, self.cg_rel)
                _remove_cgroup(self.cg, self.cg_rel)
                self.cg = None
            if self._owns_state:
                _rm_state(self.state)
                self._owns_state = False
            with contextlib.suppress(OSError):  # only if empty: other runs may have boxes there
                STATE_BASE.rmdir()

    def __enter__(self) -> SdBox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving -------------------------------------------------------------

    @property
    def root(self) -> Path:
        """`/proc/PID/root`: the box's root seen from the host.

        Beware: an absolute symlink inside the box resolves against the *host* root
        when followed through this path; use `write_file` to write into the box.
        """
        if self.pid is None:
            raise SdBoxError(f"box {self.name} is not running")
        return Path(f"/proc/{self.pid}/root")

    def nsenter_argv(self, *argv: str) -> list[str]:
        if self.pid is None:
            raise SdBoxError(f"box {self.name} is not running")
        # setpriv: commands run inside get the same reduced bounding set as the box's manager
        # (no module loading, clock setting, reboot, raw I/O ...), not the caller's full one,
        # and die with nsenter (a `run` timeout kills nsenter, whose child is in the box).
        return [
            _tool("nsenter"),
            "-t",
            str(self.pid),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "-r",
            "-w",
            "--",
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--bounding-set",
            _DROPPED_CAPS,
            "--",
            *argv,
        ]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the box (all its namespaces and its root); output captured as text.

        The command gets a small clean environment (plus `env`), not the caller's, and
        stdin from `input` (or /dev/null).  On timeout it is killed and
        subprocess.TimeoutExpired raised; with `check`, a non-zero exit raises
        subprocess.CalledProcessError (its stdout/stderr attached).
        """
        full_env = {
            "PATH": BOX_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            **(env or {}),
        }
        data = input.encode() if isinstance(input, str) else input
        with subprocess.Popen(
            self.nsenter_argv(*argv),
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd="/",
            start_new_session=True,  # its own process group, spanning into the box
        ) as proc:
            try:
                out, err = proc.communicate(data, timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_run(proc)
                raise
        res = subprocess.CompletedProcess(
            list(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, list(argv), res.stdout, res.stderr)
        return res

    @staticmethod
    def _kill_run(proc: subprocess.Popen[bytes]) -> None:
        """Kill a timed-out `run`: the command inside first, so that nsenter reaps it.

        Killing nsenter first would leave the command's zombie to the *host's* PID 1
        (the reaper of nsenter's pid namespace), and the box could not finish dying
        until that reaped it.
        """
        with contextlib.suppress(OSError, ValueError):
            for kid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(kid), signal.SIGKILL)
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Whatever the command left in its process group (now children of the box's init).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()

    def write_file(self, path: str, text: str | bytes, mode: int = 0o644) -> None:
        """Write `text` to absolute `path` inside the box (lands in its overlay), creating parents.

        Written from inside the box, so symlinks resolve within the box, never onto the host.
        """
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not absolute")
        script = 'umask 022; mkdir -p -- "$(dirname -- "$1")" && cat > "$1.sdbox-tmp" && chmod "$2" "$1.sdbox-tmp" && mv -f -- "$1.sdbox-tmp" "$1"'
        self.run("sh", "-c", script, "sh", path, f"{mode:o}", input=text)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show [-p PROPS] UNIT` as a dict."""
        argv = ["systemctl", "show"]
        if props:
            argv.append("--property=" + ",".join(props))
        res = self.run(*argv, "--", unit)
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k] = v
        return out

    def wait_unit(
        self,
        unit: str,
        predicate: Callable[[dict[str, str]], object],
        timeout_s: float = 10.0,
        what: str = "",
        props: Sequence[str] = (),
    ) -> dict[str, str]:
        """Poll `show(unit, *props)` until `predicate` holds; return that dict.

        On timeout: AssertionError with the last properties seen and the unit's journal.
        """
        deadline = time.monotonic() + timeout_s
        interval = 0.01
        while True:
            shown = self.show(unit, *props)
            if predicate(shown):
                return shown
            if time.monotonic() > deadline:
                keys = props or ("ActiveState", "SubState", "Result", "StatusText", "MainPID", "NRestarts")
                seen = {k: shown.get(k) for k in keys}
                raise AssertionError(
                    f"timed out after {timeout_s:g} s waiting for {what or unit}; {unit}: {seen}\n"
                    f"--- journal of {unit} ---\n{self.journal(unit)[-4000:]}"
                )
            time.sleep(interval)
            interval = min(interval * 2, 0.1)

    def journal(self, unit: str | None = None, *extra: str) -> str:
        """The box journal (of `unit`, if given), message text only."""
        argv = ["journalctl", "--no-pager", "-o", "cat", *extra]
        if unit is not None:
            argv += ["-u", unit]
        return self.run(*argv, check=False).stdout
