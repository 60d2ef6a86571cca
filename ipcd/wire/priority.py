"""The one table of syslog severities and facilities, by number and by name.

RFC 5424 §6.2.1 numbers them; the names are syslog.h's (glibc
`prioritynames[]`/`facilitynames[]`), plus RFC 5424's long severity names
and its facilities 12-15:

    severity  0 emerg (emergency, panic)  1 alert  2 crit (critical)  3 err (error)
              4 warning (warn)  5 notice  6 info (informational)  7 debug
    facility  0 kern  1 user  2 mail  3 daemon  4 auth (security)  5 syslog  6 lpr
              7 news  8 uucp  9 cron  10 authpriv  11 ftp  12 ntp  13 audit
              14 alert  15 clock  16-23 local0..local7

`severity()` and `facility()` read a number or a name (any case) and raise
`ValueError` for anything else; `parse_priority()` reads `logger -p`'s
`[facility.]level`.  `SEVERITY_NAMES[n]` and `FACILITY_NAMES[n]` are the
names to show.  Who accepts which spelling where (a query, a datagram, a
command line) is the caller's business; this module only knows the table.
"""

from __future__ import annotations

SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
SEVERITY_ALIASES = {"emergency": 0, "panic": 0, "critical": 2, "error": 3, "warn": 4, "informational": 6}
FACILITY_NAMES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
# glibc's and logger's old name for auth (syslog.h facilitynames[]).
FACILITY_ALIASES = {"security": 4}

# What logger(1) and syslog(3) use when no facility is given.
DEFAULT_FACILITY = 1  # user

_SEVERITIES = {name: n for n, name in enumerate(SEVERITY_NAMES)} | SEVERITY_ALIASES
_FACILITIES = {name: n for n, name in enumerate(FACILITY_NAMES)} | FACILITY_ALIASES


def severity(value: int | str) -> int:
    """A severity from a number 0-7 or a name (`err`, `error`, `warning`...)."""
    n = _lookup(value, _SEVERITIES, len(SEVERITY_NAMES))
    if n is None:
        raise ValueError(f"not a priority: {value!r} (0-7 or {', '.join(SEVERITY_NAMES)})")
    return n


def facility(value: int | str) -> int:
    """A facility from a number 0-23 or a name (`daemon`, `local3`, `security`...)."""
    n = _lookup(value, _FACILITIES, len(FACILITY_NAMES))
    if n is None:
        raise ValueError(f"not a facility: {value!r}")
    return n


def _lookup(value: object, names: dict[str, int], count: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < count else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text.isascii() and text.isdigit():
        return int(text) if int(text) < count else None
    return names.get(text)


def parse_priority(text: str) -> tuple[int, int]:
    """`err`, `3`, `local3.err` or `user.6` (as `logger -p` reads them) -> (facility, severity).

    Without a facility, `user`.  A name neither table knows and a number out
    of range are `ValueError`s with different messages: the first says how
    to write a priority, the second the ranges.
    """
    fac_text, _, sev_text = text.rpartition(".")
    if not (_readable(sev_text, _SEVERITIES) and (not fac_text or _readable(fac_text, _FACILITIES))):
        raise ValueError(f"{text!r}: use a level (err, 3) or facility.level (local3.err)")
    try:
        return (facility(fac_text) if fac_text else DEFAULT_FACILITY), severity(sev_text)
    except ValueError:
        raise ValueError(f"{text!r}: level 0-7, facility 0-23") from None


def _readable(text: str, names: dict[str, int]) -> bool:
    """A number (in range or not) or a name in `names`."""
    word = text.strip().lower()
    return (word.isascii() and word.isdigit()) or word in names
