"""`ipcd.ctl.logparams`: priorities, units and patterns as `ipcctl logs` reads them, before the daemon sees them."""

from __future__ import annotations

import pytest

from ipcd.ctl.logparams import PriorityParam, check_pattern, unit_name


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("err", 3),
        ("3", 3),
        ("Warning", 4),
        ("warning..err", "3..4"),
        ("err..warning", "3..4"),
        ("0..7", "0..7"),
        ("4..", "4.."),
        ("..2", "..2"),
        ("notice..", "5.."),
        ("..crit", "..2"),
    ],
)
def test_priorities(text: str, sent: int | str) -> None:
    assert PriorityParam().convert(text, None, None) == sent


@pytest.mark.parametrize("text", ["loud", "8", "..", "err..loud", "-1", "1..9", "a..b..c"])
def test_what_is_no_priority(text: str) -> None:
    import click

    with pytest.raises(click.BadParameter):
        PriorityParam().convert(text, None, None)


def test_units_as_journalctl_reads_them() -> None:
    assert unit_name("sshd") == "sshd.service"
    assert unit_name("sshd.service") == "sshd.service"
    assert unit_name("user@1000.service") == "user@1000.service"
    assert unit_name("session-3.scope") == "session-3.scope"
    assert unit_name("foo.bar") == "foo.bar.service"
    for bad in ("", "a b", "a/b", "x" * 300):
        with pytest.raises(ValueError):
            unit_name(bad)


def test_patterns() -> None:
    assert check_pattern("disk (full|error)") is None
    assert check_pattern(r"\pL+") is None  # RE2 reads it; the daemon has the last word
    assert check_pattern("(unclosed") is not None
    assert check_pattern("a{2,1}") is not None
