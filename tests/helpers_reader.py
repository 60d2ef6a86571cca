"""A store filled by the real `Writer`, and a `Reader` on it, for the tests of reading the log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipcd.config import StoreConfig
from ipcd.logs.query import Reader
from ipcd.logs.writer import Received, Writer
from ipcd.wire.logparse import LogEntry

T0 = 1_790_000_000.0


def row(
    message: str = "m", *, t: float = T0, prio: int = 5, ident: str = "tag", uid: int = 0, unit: str | None = None
) -> Received:
    entry = LogEntry(prio, 1, ident, None, None, None, None, None, None, message, "rfc3164", False)
    return Received(t, entry, False, 100, uid, 0, "sender", unit)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ipcd.db"


@pytest.fixture
def store(path: Path) -> Iterator[Callable[[list[Received]], int]]:
    """store(rows) -> the last id: rows written and committed by the real writer."""
    w = Writer(str(path), StoreConfig(commit_interval_ms=60_000, retention_interval_s=3600.0, commit_batch=10**7))

    def add(rows: list[Received]) -> int:
        w.add(rows)
        w.commit()
        return w.next_id - 1

    yield add
    w.close()


@pytest.fixture
def reader(path: Path, store: Any) -> Iterator[Reader]:
    store([])  # the schema exists before the first read
    r = Reader(str(path))
    yield r
    r.close()


def ids(entries: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in entries]


@pytest.fixture
def big(store: Any) -> int:
    """200,000 entries: a full scan takes well over the tests' deadlines."""
    for start in range(0, 200_000, 20_000):
        store([row("a" * 40 + "!", t=T0 + (start + i) / 1000, ident=f"i{i % 9}") for i in range(20_000)])
    return 200_000
