"""Trust in directories and files, as sshd's StrictModes and tmux do (DESIGN.md).

Every directory ipcd uses is looked at with `lstat`, never through a
symlink: it must be a real directory owned by the user that runs ipcd (or
by root), with no group or other write bit, or another local user could
swap what is in it (a socket that answers for ipcd, a store that reads
back what they wrote).  The state dir is made 0700 and the store files
0600, whatever the umask (ipcd runs with umask 077), and a store file
another uid owns is refused.  Each refusal says what is wrong and how to
fix it.  The client's side of the same rule is `ipcd.client.trust`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ipcd.errors import StartupError

STORE_FILES = ("ipcd.db", "kv.db", "forward.db")
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _refuse(path: Path, why: str, fix: str) -> StartupError:
    return StartupError(f"{path} {why}: refusing to use it; {fix}", errno.EPERM)


def trusted_dir(path: Path, uid: int, mode: int) -> None:
    """Make `path` (`mode`, parents 0755) if missing, then check it (see the module docstring)."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for p in reversed(missing):  # each with its mode set, whatever the umask
        try:
            p.mkdir()
            os.chmod(p, mode if p == path else 0o755)
        except FileExistsError:
            pass  # made meanwhile: checked below all the same
        except OSError as e:
            raise StartupError(f"cannot create {p}: {e.strerror}", e.errno or errno.EIO) from None
    try:
        st = os.lstat(path)
    except OSError as e:
        raise StartupError(f"cannot look at {path}: {e.strerror}", e.errno or errno.EIO) from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(
            path, "is a symlink", "make it a real directory, or choose another with --runtime-dir/--state-dir"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a directory", "remove it")
    if st.st_uid not in (uid, 0):
        why = f"is owned by uid {st.st_uid}, not by uid {uid} or root"
        raise _refuse(path, why, "another user may have made it first: remove it (or choose another directory)")
    if st.st_mode & 0o022:
        why = f"is writable by its group or by others (mode {stat.S_IMODE(st.st_mode):04o})"
        raise _refuse(path, why, f"chmod go-w {path}")


def private_dir(path: Path, uid: int) -> None:
    """The state dir: trusted, and 0700 (what other users could read there is every user's log)."""
    trusted_dir(path, uid, 0o700)
    st = os.lstat(path)
    if st.st_uid == uid and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def store_files(state_dir: Path, uid: int) -> None:
    """Refuse a store file that is a symlink or another uid's; make ours 0600."""
    for name in STORE_FILES:
        for suffix in SQLITE_SUFFIXES:
            path = state_dir / (name + suffix)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                raise _refuse(path, "is not a regular file", "remove it (ipcd makes its store files itself)")
            if st.st_uid != uid:
                why = f"is owned by uid {st.st_uid}, not by uid {uid}"
                raise _refuse(path, why, "remove it, or give it to the user ipcd runs as")
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(path, 0o600)
