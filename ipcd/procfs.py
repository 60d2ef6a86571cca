"""What /proc says about a peer (proc(5)): its command, groups and systemd unit.

Every read is best effort: a process may exit between sending and being
looked at, so each reader returns None (or nothing) instead of raising.
What the answers mean (a role, a rate-limit key) is the caller's business.
"""

from __future__ import annotations

import os


def comm(pid: int) -> str | None:
    """The command name of `pid` (/proc/PID/comm); None if it is gone."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return None


def groups(pid: int) -> tuple[int, ...]:
    """Supplementary groups of `pid` (/proc/PID/status, `Groups:`)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def unit(pid: int) -> str | None:
    """The systemd unit `pid` runs in (a .service or .scope), from /proc/PID/cgroup.

    The unified hierarchy's line (`0::/system.slice/foo.service`) or, on a
    hybrid system, the named systemd one; the innermost unit in the path wins.
    """
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::") or ":name=systemd:" in line:
                    for part in reversed(line.strip().split(":", 2)[2].split("/")):
                        if part.endswith((".service", ".scope")):
                            return part
    except OSError:
        pass
    return None


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of `pid` (/proc/PID/statm, in pages)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
