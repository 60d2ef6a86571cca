"""`grep`: the pattern of `logs.query`, `logs.follow` and `ipcctl logs -g`.

Patterns are RE2 syntax (https://github.com/google/re2/wiki/Syntax), run by
RE2 (the `google-re2` binding): matching takes time linear in the text,
whatever the pattern, so no pattern can make a search run away as
backtracking engines do (`(a+)+$`), and RE2 releases the GIL while it
matches, so a long match never holds the other threads.  What RE2 leaves
open is bounded here, each with a clear error (`GrepError`, a `ValueError`):

- the pattern's length (`MAX_PATTERN_CHARS`): parsing and compiling are
  linear in it, so this bounds what compiling costs;
- the compiled program (`MAX_PROGRAM_SIZE` instructions): a search that RE2's
  DFA cannot hold in memory falls back to its NFA, whose time is the text's
  length times the program's size, so this bounds one entry's match;
- RE2's memory for one pattern (`MAX_MEM_BYTES`: program and DFA cache),
  and how many compiled patterns are kept (`CACHE_SIZE`).

A counted repetition past RE2's limit of 1000 is refused, even where RE2
would read its `{` as a literal because the count does not fit its integer
(`a{4294967296}`).  Case follows journalctl -g ("smart case"): the match
ignores case unless the pattern has a capital letter.  Who calls `search`
and when it stops is the caller's business (`query`, `follow`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import re2  # type: ignore[import-untyped]

# The binding's compiled-pattern class: its `re2` module wraps each call in Python
# (about 2.4 µs a search); calling it directly costs 0.9 µs, as Python's `re` does.
from re2 import _re2

MAX_PATTERN_CHARS = 4096
MAX_PROGRAM_SIZE = 1000
MAX_MEM_BYTES = 2 * 1024 * 1024
MAX_REPEAT = 1000  # RE2's own limit for {n,m}
CACHE_SIZE = 16

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_COUNT = re.compile(r"\{\d+(?:,\d*)?\}|\{\d*,\d+\}")
_DIGITS = re.compile(r"\d+")


class GrepError(ValueError):
    """A pattern that is not valid RE2 syntax, or past a bound."""


class Grep:
    """A compiled pattern; `search` takes the text as UTF-8 bytes."""

    __slots__ = ("pattern", "ignore_case", "_re")

    def __init__(self, pattern: str, ignore_case: bool, compiled: Any) -> None:
        self.pattern = pattern
        self.ignore_case = ignore_case
        self._re = compiled

    def search(self, text: bytes) -> bool:
        return bool(self._re.Match(_UNANCHORED, text, 0, len(text))[0][0] >= 0)

    def search_text(self, text: str) -> bool:
        return self.search(text.encode("utf-8", "surrogatepass"))


def smart_case(pattern: str) -> bool:
    """Whether the search ignores case: no capital letter in the pattern (journalctl -g)."""
    return not any(c.isupper() for c in pattern)


@functools.lru_cache(maxsize=CACHE_SIZE)
def compile_grep(pattern: str) -> Grep:
    """The pattern compiled, or `GrepError` saying what is wrong with it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise GrepError(f"pattern too long: {len(pattern)} characters, at most {MAX_PATTERN_CHARS}")
    try:
        data = pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise GrepError("pattern is not valid Unicode (a lone surrogate)") from None
    ignore_case = smart_case(pattern)
    compiled = _compile(data, ignore_case)
    if not compiled.ok():
        raise GrepError(_error_text(compiled))
    _check_counts(pattern, ignore_case)
    size = compiled.ProgramSize()
    if size > MAX_PROGRAM_SIZE:
        raise GrepError(
            f"pattern too complex: it compiles to {size} RE2 instructions, at most {MAX_PROGRAM_SIZE} "
            "(large counted repetitions such as .{0,500} cost the most)"
        )
    return Grep(pattern, ignore_case, compiled)


def _compile(data: bytes, ignore_case: bool) -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEM_BYTES
    options.log_errors = False  # RE2 would write each bad pattern to ipcd's stderr
    options.never_capture = True  # a yes/no answer is all a filter needs
    options.case_sensitive = not ignore_case
    return _re2.RE2(data, options)


def _check_counts(pattern: str, ignore_case: bool) -> None:
    """Refuse a count RE2 passed over as literal text only because it overflowed its integer."""
    if not any(_big(n) for m in _COUNT.finditer(pattern) for n in _DIGITS.findall(m.group(0))):
        return
    probe = _COUNT.sub(_clamp, pattern)
    if not _compile(probe.encode("utf-8"), ignore_case).ok():  # as a repetition, RE2 refuses it
        big = next(m.group(0) for m in _COUNT.finditer(pattern) if _clamp(m) != m.group(0))
        raise GrepError(f"bad regular expression: invalid repetition size: {big} (at most {MAX_REPEAT})")


def _big(digits: str) -> bool:
    return len(digits) > 4 or int(digits) > MAX_REPEAT  # no int() of thousands of digits


def _clamp(m: re.Match[str]) -> str:
    return _DIGITS.sub(lambda d: str(MAX_REPEAT + 1) if _big(d.group(0)) else d.group(0), m.group(0))


def _error_text(compiled: Any) -> str:
    raw = compiled.error()
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if text.startswith("pattern too large"):
        return f"pattern too large: RE2 cannot compile it in {MAX_MEM_BYTES // 1024} KiB"
    if text.startswith("invalid repetition size"):
        text += f", at most {MAX_REPEAT}"
    return f"bad regular expression: {text} (RE2 syntax)"
