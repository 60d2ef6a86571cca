"""ipcd.toml as text, below `config`: the document, what a value may be, where a key is.

`config.parse` turns the file into the `Config` dataclasses; this module
knows no dataclass, only the text and the metadata (`kind`, `min`, `max`,
`choices`) that `config` declares on each field:

- `read_toml(raw, path)`: the document, or a `ConfigError` naming the line
  (not UTF-8, TOML syntax);
- `check(value, meta)`: the value as the field holds it, or `ValueError`
  with the reason (`must be at least 64, not 10`);
- `line_of(text, section, key)`, `forward_line(text, index, key)`: the line
  a key is on, best effort (tomllib keeps no positions), so that an error
  names it.

A level name (`[[forward]] priority = "warning"`) is read with the one
severity table, `wire.priority`, a table that imports nothing: the file is
where an unknown name must be refused, at its line.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from ipcd.errors import ConfigError
from ipcd.wire.priority import severity

_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def read_toml(raw: bytes, path: str) -> tuple[dict[str, Any], str]:
    """The document and its text; a `ConfigError` with the line for bad UTF-8 or bad TOML."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 (byte {e.start})", path, line) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+)", str(e))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))  # "at end of document"
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise ConfigError(f"TOML syntax: {msg}", path, line) from None
    except ValueError as e:  # an integer past the interpreter's int-string limit
        raise ConfigError(f"TOML value: {e}", path) from None


# -- values ------------------------------------------------------------------


def check(value: Any, meta: Mapping[str, Any]) -> Any:
    kind, lo, hi, choices = meta["kind"], meta["min"], meta["max"], meta["choices"]
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"must be an integer, not {_tname(value)}")
    elif kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"must be a number, not {_tname(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise ValueError("number out of range") from None
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value}")
    elif kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
    elif choices is not None and value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    elif kind == "mode":
        value = parse_mode(value)
    elif kind == "path" and (not isinstance(value, str) or (value and not value.startswith("/"))):
        raise ValueError("must be an absolute path (or empty)")
    elif kind == "target" and (not isinstance(value, str) or not _TARGET_NAME.fullmatch(value)):
        raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    elif kind == "severity":
        value = _severity(value)
    elif kind == "strs" and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise ValueError("must be a list of non-empty strings")
    elif kind == "uids" and not (
        isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in value)
    ):
        raise ValueError("must be a list of uids (numbers)")
    elif kind == "ids" and (
        not isinstance(value, list)
        or not all(
            (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (isinstance(v, str) and v) for v in value
        )
    ):
        raise ValueError("must be a list of ids (numbers) or names (strings)")
    if lo is not None and value < lo:
        raise ValueError(f"must be at least {_num(lo)}, not {value}")
    if hi is not None and value > hi:
        raise ValueError(f"must be at most {_num(hi)}, not {value}")
    return value


def parse_mode(value: Any) -> int:
    """A file mode as `"0660"` (octal string) or `0o660` (TOML integer)."""
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise ValueError(f'must be an octal mode such as "0660", not {value!r}')


def _severity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a level name (emerg..debug) or 0-7")
    try:
        return severity(value)
    except ValueError:
        raise ValueError(f"must be a level name (emerg..debug) or 0-7, not {value!r}") from None


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _tname(value: Any) -> str:
    return {str: "a string", bool: "a boolean", list: "an array", dict: "a table", float: "a float"}.get(
        type(value), type(value).__name__
    )


# -- where a key is ----------------------------------------------------------

_KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_HEADER = re.compile(rf"^\s*\[\[?\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*\]\]?")
_ASSIGN = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
_INLINE_KEY = re.compile(rf"[{{,]\s*({_KEY})\s*=")


def _dotted(text: str) -> list[str]:
    return [k.strip().strip("\"'") for k in re.findall(_KEY, text)]


def line_of(text: str, section: str | None, key: str) -> int | None:
    """Best-effort line of `key` in `[section]` (or of the table `key` itself)."""
    current: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            current = _dotted(m.group(1))
            if section is None and current[0] == key:
                return n
            if section is not None and current[:2] == [section, key]:
                return n  # [control.extra]: a table where a key was expected
            continue
        m = _ASSIGN.match(line)
        if not m:
            continue
        full = current + _dotted(m.group(1))
        if section is None and full[0] == key:
            return n
        if section is not None and full[:2] == [section, key]:
            return n
        inline = section is not None and full == [section]  # an inline table: section = { key = ... }
        if inline and any(_dotted(k)[0] == key for k in _INLINE_KEY.findall(line)):
            return n
    return None


def forward_line(text: str, index: int, key: str | None) -> int | None:
    """The line of `key` in the `index`-th (1-based) [[forward]] table, else of its header."""
    header, n = None, 0
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            if header is not None:
                break
            if line.lstrip().startswith("[[") and _dotted(m.group(1)) == ["forward"]:
                n += 1
                if n == index:
                    header = lineno
            continue
        if header is not None and key is not None:
            a = _ASSIGN.match(line)
            if a and _dotted(a.group(1))[0] == key:
                return lineno
    return header
