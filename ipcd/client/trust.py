"""Trust in the path to a socket before anything is sent through it (DESIGN.md "Trust in directories and files").

Without `XDG_RUNTIME_DIR` (su, cron, ssh without pam_systemd) the user
instance lives in `/tmp/ipcd-$UID`, a name any local user can take first,
with a fake server inside that would collect every key, message and log
line sent to it.  So, as sshd's StrictModes and tmux do, the client checks
the whole path with `lstat` before it connects or sends, whether the path
was found by the default rules or given (`--socket`, `$IPCD_SOCKET`,
`--log-socket`, `$IPCD_LOG_SOCKET`, `Client(path)`), since an environment
variable may point into a directory someone else made:

- every directory from `/` down must be a real directory owned by root, by
  the caller, or by the `ipcd` system user (when it exists: it runs the
  system instance), with no group or other write bit, except a root-owned
  directory with the sticky bit (`/tmp`), where nobody can rename or remove
  what another user made;
- a symlink on the way is followed only if root or the caller owns it (it
  sits in a directory that passed, so nobody else can re-point it); its
  target is checked the same way;
- the socket file itself must not be a symlink and must be owned by one of
  the same owners;
- a missing directory or socket means no daemon: `FileNotFoundError`,
  without a connect that someone could win by creating the name in between.

A path that fails raises `Untrusted` (exit 3 in ipcctl), naming the path,
why, and how to fix it.
"""

from __future__ import annotations

import functools
import os
import pwd
import stat

from ipcd.client.errors import Untrusted

MAX_SYMLINKS = 40  # as the kernel's ELOOP limit
SYSTEM_USER = "ipcd"


@functools.cache
def _system_user() -> int | None:
    try:
        return pwd.getpwnam(SYSTEM_USER).pw_uid
    except KeyError:
        return None


def trusted_owners() -> frozenset[int]:
    """root, the caller, and the ipcd system user if there is one."""
    system = _system_user()
    return frozenset({0, os.geteuid()} | ({system} if system is not None else set()))


def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _fix(path: str, st: os.stat_result) -> str:
    if st.st_uid not in (0, os.geteuid()):
        return (
            f"it is not yours: have it removed (`sudo rm -rf {path}`), then start ipcd again; "
            "or use a private runtime dir (log in with pam_systemd for XDG_RUNTIME_DIR, or set IPCD_RUNTIME_DIR)"
        )
    return f"`chmod go-w {path}`"


def check_socket_path(path: str, owners: frozenset[int] | None = None) -> None:
    """Raise `Untrusted` unless every directory on `path` and the socket itself are trusted.

    A missing component raises `FileNotFoundError` (no socket there).
    """
    owners = trusted_owners() if owners is None else owners
    _check(os.path.abspath(path), owners, path, 0)


def _check(path: str, owners: frozenset[int], asked: str, links: int) -> None:
    parts = [p for p in path.split("/") if p]
    current = "/"
    _check_dir(current, owners, asked)
    for i, name in enumerate(parts):
        candidate = os.path.join(current, name)
        last = i == len(parts) - 1
        st = os.lstat(candidate)  # FileNotFoundError: no socket there, and no connect to race
        if stat.S_ISLNK(st.st_mode):
            if last:
                raise Untrusted(f"{candidate} is a symlink: the socket must be the file itself", candidate)
            if st.st_uid not in owners:
                raise Untrusted(f"{candidate} is a symlink owned by {_who(st.st_uid)}: they can re-point it", candidate)
            if links >= MAX_SYMLINKS:
                raise Untrusted(f"too many symlinks on the way to {asked}", candidate)
            target = os.path.join(current, os.readlink(candidate))
            rest = "/".join(parts[i + 1 :])
            _check(os.path.normpath(os.path.join(target, rest)), owners, asked, links + 1)
            return
        if last:
            if st.st_uid not in owners:
                raise Untrusted(
                    f"{candidate} is owned by {_who(st.st_uid)}, not by you, root or ipcd: it is not your ipcd's "
                    f"socket; {_fix(candidate, st)}",
                    candidate,
                )
            return
        if not stat.S_ISDIR(st.st_mode):
            return  # not a directory: connect() says ENOTDIR as it should
        _check_dir(candidate, owners, asked, st)
        current = candidate


def _check_dir(path: str, owners: frozenset[int], asked: str, st: os.stat_result | None = None) -> None:
    st = os.lstat(path) if st is None else st
    if st.st_uid not in owners:
        raise Untrusted(
            f"{path} (on the way to {asked}) is owned by {_who(st.st_uid)}, not by you, root or ipcd: "
            f"whoever owns it can put a fake ipcd there; {_fix(path, st)}",
            path,
        )
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (st.st_uid == 0 and st.st_mode & stat.S_ISVTX):
        who = "other users" if st.st_mode & stat.S_IWOTH else "its group"
        raise Untrusted(
            f"{path} (on the way to {asked}) is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}), who could "
            f"replace the socket; {_fix(path, st)}",
            path,
        )
