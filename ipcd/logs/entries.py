"""A stored row as the entry shape DESIGN.md gives, as a dict or as JSON text.

`structured_data` and `fields` are stored as JSON text and go out decoded.
One that cannot be decoded back (nested deeper than Python's parser goes,
from a store written before nesting was capped, or damaged) goes out as the
string it is stored as: a query never fails for one entry.
"""

from __future__ import annotations

import json
from typing import Any

from ipcd.logs.store import COLUMNS

_JSON_COLUMNS = tuple(COLUMNS.index(name) for name in ("structured_data", "fields"))
_TRUNCATED = COLUMNS.index("truncated")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def entry_dict(values: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row (COLUMNS order) as an entry."""
    row = list(values)
    for i in _JSON_COLUMNS:
        if row[i] is not None:
            row[i] = _decoded(row[i])
    row[_TRUNCATED] = bool(row[_TRUNCATED])
    return dict(zip(COLUMNS, row, strict=True))


def entry_json(values: tuple[Any, ...]) -> str:
    """A stored row as one entry's JSON text."""
    entry = entry_dict(values)
    try:
        return _dumps(entry)
    except (ValueError, RecursionError):  # decoded, yet too deep to encode again
        for i in _JSON_COLUMNS:
            name = COLUMNS[i]
            if values[i] is not None:
                entry[name] = values[i]
        return _dumps(entry)


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
