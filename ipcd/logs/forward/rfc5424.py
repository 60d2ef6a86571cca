"""A stored entry as an RFC 5424 syslog message, framed for TCP (sans-IO).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [ipcd@32473 id="…" uid="…" …][orig@1 …] MSG

The header carries what the sender claimed (RFC 5424 §6.2): APP-NAME is the
ident, PROCID the claimed pid, HOSTNAME the claimed host (else this
machine's), MSGID the claimed one, TIMESTAMP the claimed time when it reads
as RFC 3339, else the time ipcd received the entry.  What the kernel vouched
for travels as structured data, `[ipcd@32473 id uid gid pid comm unit]`
(32473 is the example private enterprise number RFC 5612 reserves for
documentation), before the entry's own structured data.  Header fields are
PRINTUSASCII, cut to their maximum lengths (§6); a byte that is not becomes
`_`.  Over TCP and TLS each message is octet-counted: `LEN SP MSG` (RFC 6587
§3.4.1, RFC 5425 §4.3); over UDP one message is one datagram (RFC 5426).
No sockets and no clock here: the forwarder is `engine`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from typing import Any

from ipcd.logs.store import StoredEntry

SD_ID = "ipcd@32473"
NILVALUE = "-"
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[= \]"]')  # §6.3.3: SD-NAME excludes '=', SP, ']', '"'
_SD_ESCAPE = re.compile(r'(["\\\]])')  # §6.3.3: '"', '\' and ']' in PARAM-VALUE are escaped


def header_field(value: Any, max_len: int) -> str:
    """A header field: PRINTUSASCII, at most `max_len`, "-" when empty (§6.2)."""
    if value is None:
        return NILVALUE
    text = _NOT_PRINTUSASCII.sub("_", str(value))[:max_len]
    return text or NILVALUE


def sd_name(name: str) -> str:
    return _NOT_SD_NAME.sub("_", name)[:32] or "_"


def sd_value(value: Any) -> str:
    text = str(value)
    if '"' in text or "\\" in text or "]" in text:  # rare: the regex only then (this runs per entry and param)
        return _SD_ESCAPE.sub(r"\\\1", text)
    return text


def sd_element(sd_id: str, params: list[tuple[str, Any]]) -> str:
    inner = "".join(f' {sd_name(k)}="{sd_value(v)}"' for k, v in params if v is not None)
    return f"[{sd_id}{inner}]"


def _original_sd(raw: str | None) -> str:
    """The entry's own structured data, written back (a dict of elements, or pairs if repeated names were kept)."""
    if not raw:
        return ""
    try:
        data = json.loads(raw)
    except ValueError:
        return ""
    out = []
    items = data.items() if isinstance(data, dict) else data if isinstance(data, list) else []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            continue
        sid, params = item
        if isinstance(params, dict):
            pairs = list(params.items())
        elif isinstance(params, list):
            pairs = [tuple(p) for p in params if isinstance(p, (list, tuple)) and len(p) == 2]
        else:
            continue
        if str(sid) == SD_ID:
            continue  # ours is written from the trusted fields, never from what a sender claimed
        out.append(sd_element(sd_name(str(sid)), pairs))
    return "".join(out)


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _utc(received: float) -> str:
    whole = int(received)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((received - whole) * 1e6):06d}Z"


def timestamp(claimed: str | None, received: float) -> str:
    """The claimed time if it reads as RFC 3339 with a zone, else the received time, in UTC (§6.2.3)."""
    if claimed:
        try:
            when = dt.datetime.fromisoformat(claimed.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            return when.isoformat(timespec="microseconds")
    return _utc(received)


def format_entry(e: StoredEntry, hostname: str, max_bytes: int, on_cut: Callable[[], None] | None = None) -> bytes:
    """One RFC 5424 message, at most `max_bytes` (>= 2048, so that the header always fits;
    the MSG is cut at a character boundary).  `on_cut` is called if something was left out:
    the end of the MSG, or the sender's structured data."""
    pri = e.facility * 8 + e.priority  # §6.2.1
    trusted = "".join(
        f' {name}="{sd_value(value)}"'
        for name, value in (
            ("uid", e.sender_uid),
            ("gid", e.sender_gid),
            ("pid", e.sender_pid),
            ("comm", e.sender_comm),
            ("unit", e.sender_unit),
        )
        if value is not None
    )
    head = (
        f"<{pri}>1 {timestamp(e.timestamp, e.time)} {header_field(e.hostname or hostname, 255)} "
        f"{header_field(e.ident, 48)} {header_field(e.pid, 128)} {header_field(e.msgid, 32)} "
        f'[{SD_ID} id="{e.id}"{trusted}]'
    ).encode("utf-8", "replace")
    theirs = _original_sd(e.structured_data).encode("utf-8", "replace")
    cut = len(head) + len(theirs) >= max_bytes
    if not cut:  # else the sender's own structured data is left out, never cut
        head += theirs
    msg = e.message.encode("utf-8", "replace") if e.message else b""
    room = max_bytes - len(head) - 1
    if len(msg) > room:
        msg = msg[: max(room, 0)].decode("utf-8", "ignore").encode("utf-8")  # never half a character
        cut = True
    if cut and on_cut is not None:
        on_cut()
    return head + b" " + msg if msg else head


def frame(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet counting: `MSG-LEN SP SYSLOG-MSG`."""
    return b"%d %s" % (len(message), message)
