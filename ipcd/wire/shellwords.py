"""A plain command's words, split as a POSIX shell (and `shlex.split`) splits them.

Blanks (space, tab, CR, LF) separate words; `'...'` keeps everything in it
as it is; `"..."` too, but for `\\"` and `\\\\`; a backslash outside quotes
keeps the next character as it is.  `shlex.split` does the same, one
character at a time and growing each word by concatenation, which takes
time that grows with the square of a word's length (a 1 MiB word: about 18
s).  Here one regular expression walks the text once, each match a whole
run of plain characters or a whole quoted part, so the time grows in step
with the text: a peer's 1 MiB command line is read as fast as a JSON one.
"""

from __future__ import annotations

import re

# One part of the text each match: blanks, a run of plain characters, an escaped character, a
# single-quoted part, a double-quoted part, or (the last group) a character that starts none of
# these: a lone backslash at the end, or a quote that is never closed.  The quantifiers are
# possessive: nothing here needs backtracking, and without them the engine keeps a record per
# escape in a double-quoted part (150 bytes each: 150 MB for a MiB of them).
_PART = re.compile(
    r"""([ \t\r\n]++)|([^ \t\r\n'"\\]++)|\\(.)|'([^']*+)'|"([^"\\]*+(?:\\.[^"\\]*+)*+)"|(.)""",
    re.DOTALL,
)
_IN_DOUBLE_QUOTES = re.compile(r'\\(["\\])')  # the only escapes inside "...": the rest stays as typed


def split(text: str, limit: int | None = None) -> list[str]:
    """The words of `text`, as `shlex.split(text)` gives them; ValueError (with shlex's words) if a quote
    is never closed or a backslash ends the text.  With `limit`, the first `limit` words only: the rest
    of the text is not read."""
    words: list[str] = []
    word: list[str] | None = None  # the parts of the word being read
    for m in _PART.finditer(text):
        blank, plain, escaped, single, double, stray = m.groups()
        if blank is not None:
            if word is not None:
                words.append("".join(word))
                word = None
                if len(words) == limit:
                    return words
            continue
        if stray is not None:
            raise ValueError(_stray(stray, text[m.end() :]))
        if word is None:
            word = []
        if double is not None:
            word.append(_IN_DOUBLE_QUOTES.sub(r"\1", double) if "\\" in double else double)
        else:
            word.append(plain if plain is not None else escaped if escaped is not None else single)
    if word is not None:
        words.append("".join(word))
    return words


def _stray(char: str, rest: str) -> str:
    """shlex's words for what went wrong: the text ends in a backslash with nothing to escape
    (outside quotes, or inside unclosed double quotes), or inside a quote."""
    if char == "\\" or (char == '"' and (len(rest) - len(rest.rstrip("\\"))) % 2):
        return "No escaped character"
    return "No closing quotation"
