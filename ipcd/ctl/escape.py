"""What a peer wrote, made safe to show on a terminal (DESIGN.md "ipcctl").

Log messages, idents, kv values, channel messages, command names and error
texts come from other processes.  Before any of it reaches a terminal,
`escape` rewrites every character that a terminal may act on instead of
showing: the C0 and C1 controls and DEL (category Cc: ESC starts OSC title
and OSC 52 clipboard writes and `ESC[2J`; CR and BS overwrite what is
shown; 0x9b is CSI on some terminals), the format characters (Cf: the bidi
overrides U+202A-U+202E and isolates U+2066-U+2069, U+200E/F, zero-width
joiners), lone surrogates (Cs) and the line and paragraph separators
(Zl, Zp).  Each becomes a visible escape: `\\x1b`, `\\u202e`, `\\U000e0001`,
with `\\t`, `\\n` and `\\r` for the common three.  A backslash the peer wrote
stays as it is: what is shown is for a person to read, `-o json` and
`--json` are for exact values.

`escape_lines` keeps a multi-line text readable without letting it forge
another entry: its lines after the first are indented by `indent`, so that
only an entry begins at the left margin.  `json_text` is JSON whose strings
carry the same characters as `\\uXXXX` escapes, still valid JSON for any
parser, and safe on a terminal.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

_UNSAFE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in _UNSAFE


def escape(text: str) -> str:
    """`text` with every control, format and separator character shown as an escape."""
    if text.isprintable():  # no Cc, Cf, Cs, Zl, Zp (nor other Z but space): the common case
        return text
    return "".join(_escape_char(c) if _unsafe(c) else c for c in text)


def escape_lines(text: str, indent: str) -> str:
    """`escape` for each line of `text`, lines after the first indented by `indent`."""
    if "\n" not in text:
        return escape(text)
    return ("\n" + indent).join(escape(line) for line in text.split("\n"))


def width(text: str) -> int:
    """Columns `text` takes on a terminal (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def _json_char(c: str) -> str:
    n = ord(c)
    if n < 0x7F or not _unsafe(c):  # json.dumps has escaped C0 already
        return c
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # RFC 8259 §7: a character outside the BMP is a surrogate pair
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def json_text(value: Any, indent: int | None = None) -> str:
    """`value` as JSON (non-ASCII text as it is), with every unsafe character escaped."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    lines = text.split("\n") if indent is not None else [text]  # only indentation makes a raw newline
    return "\n".join(line if line.isprintable() else "".join(map(_json_char, line)) for line in lines)
