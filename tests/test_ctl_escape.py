"""ipcctl's one escaping function, against what a hostile peer writes to reach an admin's terminal."""

from __future__ import annotations

import json
import unicodedata

import pytest

from ipcd.ctl.escape import escape, escape_lines, json_text, width
from ipcd.ctl.logfmt import Formatter

HOSTILE = [
    # (what a peer sent, what the terminal must get)
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC 0: the window title
    ("\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07", "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07"),  # OSC 52: the clipboard
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clear the screen
    ("ok\rFAILED", "ok\\rFAILED"),  # CR: overwrite what is shown
    ("good\x08\x08\x08\x08evil", "good\\x08\\x08\\x08\\x08evil"),  # BS
    ("txt.exe\u202ecod.sh", "txt.exe\\u202ecod.sh"),  # RLO: right-to-left override
    ("\u2066isolate\u2069 \u200e\u200f", "\\u2066isolate\\u2069 \\u200e\\u200f"),  # bidi isolates, LRM, RLM
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),  # format characters (Cf)
    ("\x9b31m C1 CSI \x85", "\\x9b31m C1 CSI \\x85"),  # C1 controls: CSI, NEL
    ("del\x7f", "del\\x7f"),
    ("tab\there", "tab\\there"),
    ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),  # Zl, Zp
    ("tag\U000e0041", "tag\\U000e0041"),  # a Cf outside the BMP
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ("nul\x00", "nul\\x00"),
    # What a person may write stays as it is.
    ("plain ASCII, no change", "plain ASCII, no change"),
    ("ключ 鍵 café naïve 🙂", "ключ 鍵 café naïve 🙂"),
    ("back\\slash and \\x1b as text", "back\\slash and \\x1b as text"),
    ("nbsp\u00a0kept", "nbsp\u00a0kept"),
]


@pytest.mark.parametrize(("raw", "shown"), HOSTILE)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in escape(raw))


def test_every_control_and_format_character_is_escaped() -> None:
    unsafe = [chr(n) for n in range(0x110000) if unicodedata.category(chr(n)) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert len(unsafe) > 2000  # the C0 and C1 sets, DEL, Cf, surrogates, Zl, Zp
    shown = escape("".join(unsafe))
    assert shown.isascii() and shown.isprintable()


def test_a_newline_cannot_forge_an_entry() -> None:
    forged = "disk ok\nNov 30 12:00:00 host sshd[1]: Accepted password for root from 10.0.0.1"
    fmt = Formatter("short", hostname="host")
    entry = {"id": 7, "time": 0.0, "priority": 6, "ident": "app", "sender_pid": 4242, "message": forged}
    lines = fmt.render(entry).split("\n")
    assert lines[0].endswith(" host app[4242]: disk ok")
    assert lines[1].startswith(" " * lines[0].index("disk ok") + "Nov 30")  # under the message, not at the margin
    assert escape_lines("a\nb\x1b", "  ") == "a\n  b\\x1b"


def test_json_text_stays_json_and_safe() -> None:
    value = {"message": "\x1b]52;c;x\x07 \u202e \x9b \U000e0041 \ud800 é\n", "k\u202e": [1, "\x7f"]}
    for indent in (None, 4):
        text = json_text(value, indent)
        assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text.replace("\n", ""))
        assert "é" in text  # non-ASCII stays readable
        assert json.loads(text) == value


def test_width_counts_wide_characters() -> None:
    assert width("abc") == 3
    assert width("鍵") == 2
    assert width("e\u0301") == 1
