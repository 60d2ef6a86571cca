"""`ipcctl logs`'s option types: each reads journalctl's spelling or fails as a usage error.

A value ipcctl cannot read is a click usage error (exit 2) that names the
flag, never a request the daemon refuses.  What each sends the daemon
(DESIGN.md "Methods", `logs.query`):

    -p err          priority 3                 that level and more severe
    -p warning..err priority "3..4"            a range, both ends in, either order
    -p 4.. / ..2    priority "4.." / "..2"     open ranges (numbers: 4-7, 0-2)
    -u sshd         unit "sshd.service"        as journalctl: a name without a type is a service
    --uid alice     uid 1000                   a number or a user name
    -g PATTERN      grep PATTERN               RE2 syntax, checked here when RE2 is at hand
    -n all          (paged with after_id)      -n N: N, any size
"""

from __future__ import annotations

import pwd
import re
from typing import Any

import click

from ipcd.wire.priority import SEVERITY_NAMES, severity

# systemd.unit(5): the unit types; a name ending in none of them gets ".service" (as journalctl -u).
UNIT_TYPES = (
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
)
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+")


class PriorityParam(click.ParamType[int | str]):
    """`-p`: a level (0-7 or a name) or a range FROM..TO, FROM.., ..TO; sends a number or "A..B"."""

    name = "PRIO"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            if ".." not in text:
                return severity(text)
            lo_text, hi_text = text.split("..", 1)
            lo = severity(lo_text) if lo_text.strip() else None
            hi = severity(hi_text) if hi_text.strip() else None
        except ValueError:
            self.fail(
                f"{value!r}: use a level (0-7 or {', '.join(SEVERITY_NAMES)}) or a range like warning..err", param, ctx
            )
        if lo is None and hi is None:
            self.fail(f"{value!r}: a range needs at least one end (err.., ..warning)", param, ctx)
        if lo is not None and hi is not None:
            lo, hi = min(lo, hi), max(lo, hi)  # journalctl takes the ends in either order
        return f"{'' if lo is None else lo}..{'' if hi is None else hi}"


def unit_name(text: str) -> str:
    """journalctl -u's reading of a unit: `sshd` is `sshd.service`; `ValueError` if it is no unit name."""
    name = text.strip()
    if not name or len(name) > 255 or not _UNIT_CHARS.fullmatch(name):
        raise ValueError(f"{text!r} is not a unit name")
    suffix = name.rpartition(".")[2]
    return name if "." in name and suffix in UNIT_TYPES else f"{name}.service"


class UnitParam(click.ParamType[str]):
    name = "UNIT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return unit_name(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class UidParam(click.ParamType[int]):
    """`--uid`: a number, or a user name this system knows."""

    name = "UID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit() and int(text) < 2**32:
            return int(text)
        try:
            return pwd.getpwnam(text).pw_uid
        except (KeyError, ValueError):
            self.fail(f"{value!r} is neither a uid nor a user name", param, ctx)


class LinesParam(click.ParamType[int | None]):
    """`-n`: a count, or `all` (None)."""

    name = "N|all"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "all":
            return None
        if text.isascii() and text.isdigit() and len(text) <= 12:
            return int(text)
        self.fail(f"{value!r} is not a count (a number, or all)", param, ctx)


def check_pattern(pattern: str) -> str | None:
    """Why `pattern` is no RE2 expression (the syntax the daemon matches with), or None.

    The daemon also bounds a pattern's size; a pattern it refuses for that is
    turned into the same usage error when it answers.
    """
    import re2  # type: ignore[import-untyped]  # here, not at the top: most commands never need it

    try:
        re2.compile(pattern)
    except Exception as e:
        return str(e) or "not an RE2 expression"
    return None


class PatternParam(click.ParamType[str]):
    name = "PATTERN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        why = check_pattern(str(value))
        if why is not None:
            self.fail(f"bad regular expression {value!r}: {why}", param, ctx)
        return str(value)
