"""Log entries as text, in journalctl's output modes, coloured as journalctl colours them.

    short          Nov 30 12:00:05 host ident[4242]: message
    short-iso      2026-11-30T12:00:05+01:00 host ident[4242]: message
    short-precise  Nov 30 12:00:05.123456 host ident[4242]: message
    cat            message
    json           one entry per line
    json-pretty    each entry indented
    verbose        every field, claimed and trusted side by side

The short forms show the trusted pid (`sender_pid`, from the kernel), as
journalctl shows `_PID`, and this machine's name: the pid and host a
message claims are in `verbose`.  Everything a peer wrote goes through
`escape`; the lines of a multi-line message after the first are indented
under the message, so no entry can forge another.  With `color`, the
message is coloured by priority as journalctl does: emerg..err bold red,
warning bold yellow, notice bold, debug grey.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from ipcd.ctl.escape import escape, escape_lines, json_text, width
from ipcd.wire.priority import FACILITY_NAMES, SEVERITY_NAMES

Entry = dict[str, Any]

OUTPUTS = ("short", "short-iso", "short-precise", "cat", "json", "json-pretty", "verbose")
RESET = "\x1b[0m"


def color_for(priority: int) -> str | None:
    """journalctl's colour for a priority (systemd's get_log_colors), or None."""
    if priority <= 3:
        return "\x1b[0;1;31m"  # emerg, alert, crit, err: bold red
    if priority == 4:
        return "\x1b[0;1;33m"  # warning: bold yellow
    if priority == 5:
        return "\x1b[0;1;39m"  # notice: bold
    if priority >= 7:
        return "\x1b[0;38;5;245m"  # debug: grey
    return None


class Formatter:
    """Renders entries in one output mode; `render(entry)` is the text, without a final newline."""

    def __init__(self, output: str, color: bool = False, hostname: str | None = None) -> None:
        self.output = output
        self.color = color
        self.hostname = escape(hostname or socket.gethostname())
        mode = _MODES[output]
        self.render: Callable[[Entry], str] = lambda e: mode(self, e)

    def _paint(self, text: str, priority: Any) -> str:
        code = color_for(priority) if self.color and isinstance(priority, int) else None
        if code is None:
            return text
        return "\n".join(f"{code}{line}{RESET}" for line in text.split("\n"))

    def _message(self, e: Entry, indent: str) -> str:
        msg = escape_lines(str(e.get("message", "")), indent)
        if e.get("truncated"):
            msg += " [truncated]"
        return self._paint(msg, e.get("priority"))

    def _short(self, e: Entry, when: str) -> str:
        ident = escape(str(e.get("ident") or e.get("sender_comm") or "-"))
        pid = e.get("sender_pid")
        prefix = f"{when} {self.hostname} {ident}{f'[{pid}]' if pid else ''}: "
        return prefix + self._message(e, " " * width(prefix))

    def short(self, e: Entry) -> str:
        return self._short(e, time.strftime("%b %d %H:%M:%S", time.localtime(e["time"])))

    def short_iso(self, e: Entry) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(e["time"]))
        return self._short(e, f"{stamp[:-2]}:{stamp[-2:]}")  # RFC 3339: +01:00

    def short_precise(self, e: Entry) -> str:
        t = e["time"]
        return self._short(e, time.strftime("%b %d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}")

    def cat(self, e: Entry) -> str:
        return self._message(e, "    ")

    def json(self, e: Entry) -> str:
        return json_text(e)

    def json_pretty(self, e: Entry) -> str:
        return json_text(e, indent=4)

    def verbose(self, e: Entry) -> str:
        t = e["time"]
        local = time.localtime(t)
        head = time.strftime("%a %Y-%m-%d %H:%M:%S", local) + f".{int(t % 1 * 1e6):06d} {time.strftime('%Z', local)}"
        lines = [f"{head} [id {e['id']}]"]
        prio, fac = e.get("priority"), e.get("facility")
        if isinstance(prio, int) and 0 <= prio < len(SEVERITY_NAMES):
            lines.append(f"    PRIORITY={prio} ({SEVERITY_NAMES[prio]})")
        if isinstance(fac, int):
            lines.append(f"    FACILITY={fac} ({FACILITY_NAMES[fac] if 0 <= fac < len(FACILITY_NAMES) else '?'})")
        lines += [f"    {line}" for line in _claimed_and_trusted(e)]
        for key in ("msgid", "format", "truncated"):
            if e.get(key) is not None:
                lines.append(f"    {key.upper()}={escape(str(e[key]))}")
        for key in ("structured_data", "fields"):
            if e.get(key):
                lines.append(f"    {key.upper()}={json_text(e[key])}")
        lines.append("    MESSAGE=" + self._message(e, " " * 12))
        return "\n".join(lines)


# (claimed, trusted) pairs: what the message says beside what the kernel and /proc say.
_SIDE_BY_SIDE = (
    ("ident", "sender_comm"),
    ("pid", "sender_pid"),
    ("hostname", None),
    ("timestamp", None),
    (None, "sender_uid"),
    (None, "sender_gid"),
    (None, "sender_unit"),
)


def _claimed_and_trusted(e: Entry) -> list[str]:
    lines = []
    for claimed, trusted in _SIDE_BY_SIDE:
        left = f"{claimed.upper()}={escape(str(e[claimed]))}" if claimed and e.get(claimed) is not None else ""
        right = f"{trusted.upper()}={escape(str(e[trusted]))}" if trusted and e.get(trusted) is not None else ""
        if left and right:
            lines.append(f"{left} (claimed)  {right} (trusted)")
        elif left or right:
            lines.append(f"{left} (claimed)" if left else f"{right} (trusted)")
    return lines


_MODES: dict[str, Callable[[Formatter, Entry], str]] = {
    "short": Formatter.short,
    "short-iso": Formatter.short_iso,
    "short-precise": Formatter.short_precise,
    "cat": Formatter.cat,
    "json": Formatter.json,
    "json-pretty": Formatter.json_pretty,
    "verbose": Formatter.verbose,
}
