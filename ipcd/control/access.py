"""Who may do what: a control peer's role from its credentials.

A connection's peer is known from SO_PEERCRED (pid, uid, gid) and, where the
kernel has it, SO_PEERGROUPS (supplementary groups, Linux >= 4.13); else its
groups are read from /proc/<pid>/status.  Roles are ordered read < write <
admin (DESIGN.md "Access"):

- admin: root, the daemon's own uid, `admin_uids`, members of `admin_groups`;
- write: `write_uids`, members of `write_groups`;
- read:  anyone who can connect to the socket.

Names in the config are resolved to ids when the config is loaded, so a
connection costs no NSS lookup.  Which method needs which role is the
registry's business (`methods`).
"""

from __future__ import annotations

import functools
import grp
import pwd
import socket
import struct
from dataclasses import dataclass, field

from ipcd import procfs
from ipcd.config import AccessConfig
from ipcd.errors import ConfigError, PermissionDenied

ROLES = ("read", "write", "admin")
RANK = {name: n for n, name in enumerate(ROLES)}

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # asm-generic/socket.h
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a connection, as the kernel says (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # read only when the policy has group rules
    role: str = "read"

    @functools.cached_property
    def rank(self) -> int:  # asked on every call: looked up once
        return RANK[self.role]

    @functools.cached_property
    def comm(self) -> str | None:
        """The peer's command, read from /proc when first asked (a display name, not a credential)."""
        return procfs.comm(self.pid)


@dataclass(frozen=True)
class Policy:
    """The access section with names resolved to ids."""

    daemon_uid: int
    admin_uids: frozenset[int] = frozenset()
    admin_gids: frozenset[int] = frozenset()
    write_uids: frozenset[int] = frozenset()
    write_gids: frozenset[int] = frozenset()
    warnings: tuple[str, ...] = field(default=())

    @property
    def needs_groups(self) -> bool:
        """Whether a role can depend on supplementary groups (else they are not looked up)."""
        return bool(self.admin_gids or self.write_gids)

    def role(self, uid: int, gid: int, groups: tuple[int, ...] = ()) -> str:
        gids = {gid, *groups}
        if uid == 0 or uid == self.daemon_uid or uid in self.admin_uids or gids & self.admin_gids:
            return "admin"
        if uid in self.write_uids or gids & self.write_gids:
            return "write"
        return "read"


def make_policy(cfg: AccessConfig, daemon_uid: int) -> Policy:
    """Resolve names; an unknown user or group is a config error."""

    def ids(values: list[int | str], lookup: str) -> frozenset[int]:
        out = set()
        for v in values:
            if isinstance(v, int):
                out.add(v)
                continue
            try:
                out.add(pwd.getpwnam(v).pw_uid if lookup == "user" else grp.getgrnam(v).gr_gid)
            except KeyError:
                raise ConfigError(f"no such {lookup} {v!r}", key="access") from None
        return frozenset(out)

    return Policy(
        daemon_uid=daemon_uid,
        admin_uids=ids(cfg.admin_uids, "user"),
        admin_gids=ids(cfg.admin_groups, "group"),
        write_uids=ids(cfg.write_uids, "user"),
        write_gids=ids(cfg.write_groups, "group"),
    )


def require(role: str, needed: str, method: str) -> None:
    if RANK[role] < RANK[needed]:
        raise PermissionDenied(f"{method} needs the {needed} role (you have {role})", needed)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected (socket(7), SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def peer_groups(sock: socket.socket, pid: int) -> tuple[int, ...]:
    """Supplementary groups: SO_PEERGROUPS, else /proc/<pid>/status (best effort)."""
    size = 64 * 4
    for _ in range(4):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as e:
            if e.errno == 34 and size < 65536 * 4:  # ERANGE: the list is longer
                size *= 4
                continue
            break
        return tuple(struct.unpack(f"{len(raw) // 4}I", raw))
    return procfs.groups(pid)


def identify(sock: socket.socket, policy: Policy) -> Peer:
    pid, uid, gid = peer_credentials(sock)
    groups = peer_groups(sock, pid) if policy.needs_groups else ()
    return Peer(pid, uid, gid, groups, policy.role(uid, gid, groups))
