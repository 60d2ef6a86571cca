"""One log datagram in, one `LogEntry` out (sans-IO: no socket, no clock).

Forms, tried in this order on each datagram (DESIGN.md "Log socket"):

    57 <13>1 ...                        `logger --octet-count`: the count is dropped
    <165>1 2026-11-27T10:00:00Z host app 42 ID47 [ex@1 a="b"] msg   RFC 5424
    <13>Nov 27 10:00:00 host tag[42]: msg    RFC 3164 (glibc syslog(3), logger --rfc3164)
    <13>Nov 27 10:00:00 tag[42]: msg         the local variant (logger's default on a socket)
    <13>tag: msg  /  <13>msg\\0               no timestamp (Python's SysLogHandler)
    {"message": ..., "priority": ..., "ident": ..., "fields": {...}}   JSON
    anything else                            plain text, user.notice

Nothing is dropped for its form: invalid UTF-8 becomes U+FFFD, a bad PRI
makes the whole datagram a plain entry flagged `malformed`, trailing NULs and
newlines go.  The claimed fields (ident, pid, hostname, timestamp) are only
what the sender wrote; the trusted ones (sender_pid/uid/gid/comm) come from
the kernel and are `logserver`'s business, as are rate limits and storage.
The names of severities and facilities are `priority`'s.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from ipcd.wire.jsonrpc import MAX_DEPTH, too_deep
from ipcd.wire.priority import facility, severity

# RFC 5424 §6.2.1: PRI = facility * 8 + severity, 0..191.
USER_NOTICE = (facility("user"), severity("notice"))  # for plain text


# RFC 5424 §6.3: {SD-ID: {PARAM-NAME: value}}.  A name that repeats in one element
# (§7.2.1 allows several "ip" in "origin") has the list of its values, in order; a
# repeated SD-ID (invalid, §6.3.2) adds its params to the first one's the same way.
StructuredData = dict[str, dict[str, str | list[str]]]


class LogEntry(NamedTuple):
    priority: int  # severity, 0 (emerg) .. 7 (debug)
    facility: int
    ident: str | None
    pid: int | None
    hostname: str | None
    msgid: str | None
    timestamp: str | None  # as claimed, not interpreted
    structured_data: StructuredData | None
    fields: dict[str, Any] | None
    message: str
    format: str  # rfc5424, rfc3164, json, plain
    malformed: bool


_PRI = re.compile(rb"<(\d{1,3})>")
_OCTETS = re.compile(rb"(\d{1,7}) (?=<)")
# RFC 3164 §4.1.2 TIMESTAMP "Mmm dd hh:mm:ss" (or an RFC 3339 one, as rsyslog's and
# syslog-ng's RFC 3339 templates send; the zone may be missing), then an optional HOSTNAME, then the TAG, an
# optional [PID] and ":".  A hostname holds no ":" or "[", so "<13>Nov 27 10:00:00
# su: x: y" reads as tag su, message "x: y".  A timestamp and nothing else is an
# empty message.
_RFC3164 = re.compile(
    r"(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)?)(?: |$)"
    r"(?:(?P<host>[^\s:\[\]]+) (?=[^\s:\[\]]+(?:\[[^\]\s]*\])?:))?"
    r"(?:(?P<tag>[^\s:\[\]]+)(?:\[(?P<pid>[^\]\s]*)\])?: ?)?"
    r"(?P<msg>.*)",
    re.DOTALL,
)
_TAGGED = re.compile(r"(?P<tag>[^\s:\[\]]+)(?:\[(?P<pid>[^\]\s]*)\])?: ?(?P<msg>.*)", re.DOTALL)
_SD_PARAM = re.compile(r'\s*([^\s=\]"]+)="((?:[^"\\]|\\.)*)"', re.DOTALL)
_SD_UNESCAPE = re.compile(r"\\([\"\\\]])")
_BOM = "\ufeff"


_new = tuple.__new__  # LogEntry(...) costs twice as much, on the hot path


def parse_datagram(data: bytes) -> LogEntry:
    """Parse one datagram; `data` must not be empty (an empty one is not stored)."""
    m = _FAST.match(data)
    if m is not None:
        # The common case, glibc syslog(3) and logger's default: "<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG",
        # all ASCII up to the message.  The same result as the general path, sooner.
        pri_b, ts, tag, pid, msg = m.groups()
        pri = int(pri_b)
        if pri <= 191 and (len(pri_b) == 1 or pri_b[0] != 48):
            return _new(
                LogEntry,
                (
                    pri & 7,
                    pri >> 3,
                    tag.decode(),
                    int(pid) if pid else None,
                    None,
                    None,
                    ts.decode(),
                    None,
                    None,
                    msg.rstrip(b"\0\n\r").decode("utf-8", "replace"),
                    "rfc3164",
                    False,
                ),
            )
    return parse_general(data)


# Tag and timestamp in printable ASCII other than ":", "[", "]"; a pid of up to 10 digits.
_FAST = re.compile(
    rb"<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ([!-9;-Z\\^-~]+)(?:\[(\d{1,10})\])?: ?(.*)", re.DOTALL
)


def parse_general(data: bytes) -> LogEntry:
    """Every form, tried in turn (see the module docstring)."""
    stripped = data.rstrip(b"\0\n\r")
    if data[:1].isdigit():
        m = _OCTETS.match(data)
        # logger --octet-count counts what it sends, a trailing newline included;
        # trailing NULs and newlines beyond the count are tolerated.
        if m and len(stripped) - m.end() <= int(m.group(1)) <= len(data) - m.end():
            return _parse_syslog(stripped[m.end() :], stripped)
    data = stripped
    if data[:1] == b"<":
        return _parse_syslog(data, data)
    if data[:1] == b"{":
        entry = _parse_json(data)
        if entry is not None:
            return entry
    return _plain(data, malformed=False)


def _plain(data: bytes, malformed: bool) -> LogEntry:
    text = data.decode("utf-8", "replace")
    return LogEntry(USER_NOTICE[1], USER_NOTICE[0], None, None, None, None, None, None, None, text, "plain", malformed)


def _parse_syslog(data: bytes, whole: bytes) -> LogEntry:
    m = _PRI.match(data)
    if m is None or int(m.group(1)) > 191 or (len(m.group(1)) > 1 and m.group(1)[0] == 48):
        # RFC 5424 §6.2.1: PRIVAL is 0..191, no leading zeros.  Keep it all as text.
        return _plain(whole, malformed=True)
    pri = int(m.group(1))
    rest = data[m.end() :]
    if rest[:2] == b"1 ":
        entry = _parse_rfc5424(pri, rest[2:].decode("utf-8", "replace"))
        if entry is not None:
            return entry
    text = rest.decode("utf-8", "replace")
    return _parse_rfc3164(pri, text)


def _parse_rfc3164(pri: int, text: str) -> LogEntry:
    m = _RFC3164.match(text)
    if m is not None:
        tag, pid = m.group("tag"), m.group("pid")
        return LogEntry(
            pri & 7,
            pri >> 3,
            tag,
            _pid(pid),
            m.group("host"),
            None,
            m.group("ts"),
            None,
            _procid(pid),
            m.group("msg"),
            "rfc3164",
            False,
        )
    m = _TAGGED.match(text)
    if m is not None:
        pid = m.group("pid")
        return LogEntry(
            pri & 7,
            pri >> 3,
            m.group("tag"),
            _pid(pid),
            None,
            None,
            None,
            None,
            _procid(pid),
            m.group("msg"),
            "rfc3164",
            False,
        )
    return LogEntry(pri & 7, pri >> 3, None, None, None, None, None, None, None, text, "rfc3164", False)


def _pid(text: str | None) -> int | None:
    if text and len(text) <= 10 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _procid(text: str | None) -> dict[str, Any] | None:
    # A PROCID that is not a number is kept, but not as the claimed pid.
    if text and _pid(text) is None:
        return {"procid": text}
    return None


def _nil(field: str) -> str | None:
    return None if field == "-" else field


def _parse_rfc5424(pri: int, text: str) -> LogEntry | None:
    # RFC 5424 §6: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
    parts = text.split(" ", 5)
    if len(parts) < 6:
        if len(parts) == 5:
            parts.append("-")
        else:
            return None
    ts, host, app, procid, msgid, rest = parts
    sd, msg = _split_sd(rest)
    if sd is None:
        return None
    if msg.startswith(_BOM):
        msg = msg[1:]  # RFC 5424 §6.4: the BOM marks UTF-8, it is not part of the text
    return LogEntry(
        pri & 7,
        pri >> 3,
        _nil(app),
        _pid(_nil(procid)),
        _nil(host),
        _nil(msgid),
        _nil(ts),
        sd or None,
        _procid(_nil(procid)),
        msg,
        "rfc5424",
        False,
    )


def _split_sd(rest: str) -> tuple[StructuredData | None, str]:
    """RFC 5424 §6.3 STRUCTURED-DATA, then the message; (None, "") if it is not SD.

    Every param is kept, in order: a name that repeats gets the list of its
    values, and a repeated SD-ID adds to the first (see `StructuredData`).
    """
    if rest.startswith("-"):
        return {}, rest[2:] if rest[1:2] == " " else rest[1:]
    sd: StructuredData = {}
    i = 0
    while i < len(rest) and rest[i] == "[":
        j = i + 1
        while j < len(rest) and rest[j] not in " ]":
            j += 1
        sd_id = rest[i + 1 : j]
        params = sd.setdefault(sd_id, {})
        while j < len(rest) and rest[j] != "]":
            m = _SD_PARAM.match(rest, j)
            if m is None:
                return None, ""
            _add_param(params, m.group(1), _SD_UNESCAPE.sub(r"\1", m.group(2)))
            j = m.end()
        if j >= len(rest) or not sd_id:
            return None, ""
        i = j + 1
    if i == 0:
        return None, ""
    return sd, rest[i + 1 :] if rest[i : i + 1] == " " else rest[i:]


def _add_param(params: dict[str, str | list[str]], name: str, value: str) -> None:
    seen = params.get(name)
    if seen is None:
        params[name] = value
    elif isinstance(seen, list):
        seen.append(value)
    else:
        params[name] = [seen, value]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes) -> LogEntry | None:
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        # What is stored must go out again as JSON: no lone surrogate ("\\ud800"
        # has no UTF-8 form), no number that turned into inf.
        json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except RecursionError:
        return _plain(data, malformed=True)
    except ValueError:  # UnicodeError is one too
        return None
    if too_deep(data, MAX_DEPTH):
        return _plain(data, malformed=True)  # DESIGN.md "Limits": JSON nesting depth, 64
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
        return None
    try:
        prio = severity(doc.get("priority", 6))
        fac = facility(doc.get("facility", 1))
    except ValueError:
        return None
    fields = doc.get("fields")
    extra = {k: v for k, v in doc.items() if k not in _JSON_KEYS}
    if not isinstance(fields, dict):
        fields = {"fields": fields} if fields is not None else {}
    fields = {**extra, **fields} or None
    pid = doc.get("pid")
    return LogEntry(
        prio,
        fac,
        _str(doc.get("ident")),
        pid if _is_pid(pid) else None,
        _str(doc.get("hostname")),
        _str(doc.get("msgid")),
        _str(doc.get("timestamp")),
        None,
        fields,
        doc["message"],
        "json",
        False,
    )


_JSON_KEYS = {"message", "priority", "facility", "ident", "pid", "hostname", "msgid", "timestamp", "fields"}


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _is_pid(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31
