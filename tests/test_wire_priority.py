"""`ipcd.wire.priority`: the one severity/facility table, and the commands that read it.

The expected names are written out here, not taken from the module, so that a
change to the table fails a test.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Ipcd, wait_for

import ipcd.wire.priority
from ipcd.ctl.cli import cli
from ipcd.wire.priority import FACILITY_NAMES, SEVERITY_NAMES, facility, parse_priority, severity

SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
SEVERITY_ALIASES = {"emergency": 0, "panic": 0, "critical": 2, "error": 3, "warn": 4, "informational": 6}
FACILITIES = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    *(f"local{i}" for i in range(8)),
]


# --- severity() --------------------------------------------------------------------


@pytest.mark.parametrize(("number", "name"), list(enumerate(SEVERITIES)))
def test_severity_names_both_ways(number: int, name: str) -> None:
    assert severity(name) == number and SEVERITY_NAMES[number] == name
    assert severity(number) == number and severity(str(number)) == number
    assert severity(name.upper()) == number and severity(f" {name.title()}\n") == number


@pytest.mark.parametrize(("alias", "number"), list(SEVERITY_ALIASES.items()))
def test_severity_aliases_read_and_show_as_the_name(alias: str, number: int) -> None:
    assert severity(alias) == number and severity(alias.upper()) == number
    assert SEVERITY_NAMES[severity(alias)] == SEVERITIES[number]


def test_severity_names_are_all_shown() -> None:
    assert list(SEVERITY_NAMES) == SEVERITIES


@pytest.mark.parametrize(
    "value", [8, -1, 100, "8", "-1", "", "loud", "err!", "crit.err", "３", "²", True, False, 3.0, None, [3], b"err"]
)
def test_severity_errors(value: Any) -> None:
    with pytest.raises(ValueError, match="not a priority"):
        severity(value)


# --- facility() --------------------------------------------------------------------


@pytest.mark.parametrize(("number", "name"), list(enumerate(FACILITIES)))
def test_facility_names_both_ways(number: int, name: str) -> None:
    assert facility(name) == number and FACILITY_NAMES[number] == name
    assert facility(number) == number and facility(str(number)) == number
    assert facility(name.upper()) == number and facility(f" {name.title()} ") == number


def test_facility_security_is_auth() -> None:
    assert facility("security") == facility("SECURITY") == 4
    assert FACILITY_NAMES[facility("security")] == "auth"


def test_facility_names_are_all_shown() -> None:
    assert list(FACILITY_NAMES) == FACILITIES


@pytest.mark.parametrize(
    "value", [24, -1, 100, "24", "local8", "", "nope", "user.err", True, False, 1.0, None, ["user"], b"user"]
)
def test_facility_errors(value: Any) -> None:
    with pytest.raises(ValueError, match="not a facility"):
        facility(value)


# --- parse_priority(): logger -p ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("err", (1, 3)),
        ("3", (1, 3)),
        ("critical", (1, 2)),
        ("panic", (1, 0)),
        ("WARN", (1, 4)),
        ("user.notice", (1, 5)),
        ("local3.err", (19, 3)),
        ("local3.error", (19, 3)),
        ("LOCAL7.Debug", (23, 7)),
        ("security.crit", (4, 2)),
        ("authpriv.informational", (10, 6)),
        ("kern.emerg", (0, 0)),
        ("19.3", (19, 3)),
        ("0.7", (0, 7)),
        (".err", (1, 3)),
    ],
)
def test_parse_priority(text: str, expected: tuple[int, int]) -> None:
    assert parse_priority(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "'bogus': use a level (err, 3) or facility.level (local3.err)"),
        ("", "'': use a level"),
        ("local3.", "'local3.': use a level"),
        ("local8.err", "'local8.err': use a level"),
        ("user.loud", "'user.loud': use a level"),
        ("-1", "'-1': use a level"),
        ("8", "'8': level 0-7, facility 0-23"),
        ("24.err", "'24.err': level 0-7, facility 0-23"),
        ("kern.9", "'kern.9': level 0-7, facility 0-23"),
    ],
)
def test_parse_priority_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_priority(text)
    assert str(e.value).startswith(message)


def test_priority_is_sans_io() -> None:
    """The table imports nothing but `ipcd.errors`, if anything (wire's rule, STYLE.md "Layout")."""
    tree = ast.parse(Path(ipcd.wire.priority.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {"__future__", "ipcd.errors"}, imported


# --- ipcctl send and ipcctl logs read the same names -------------------------------

ALL_SEVERITY_WORDS = [*SEVERITIES, *SEVERITY_ALIASES]


def test_ipcctl_send_takes_every_name_logs_takes(ipcd: Ipcd) -> None:
    runner = CliRunner()
    for word in ALL_SEVERITY_WORDS:
        res = runner.invoke(cli, ["--socket", ipcd.sock, "send", "-p", f"security.{word}", "-t", "prio", word])
        assert (res.exit_code, res.output) == (0, ""), (word, res.output)

    def stored() -> list[dict[str, Any]]:
        return ipcd.call("logs.query", {"ident": "prio", "limit": 100})["entries"]  # type: ignore[no-any-return]

    wait_for(lambda: len(stored()) == len(ALL_SEVERITY_WORDS), 5, "every datagram to be stored")
    got = {e["message"]: (e["facility"], e["priority"]) for e in stored()}
    expected = {**{name: n for n, name in enumerate(SEVERITIES)}, **SEVERITY_ALIASES}
    assert got == {word: (4, n) for word, n in expected.items()}
    for word, n in expected.items():  # and `logs -p WORD` means that level and more severe
        res = runner.invoke(cli, ["--socket", ipcd.sock, "--json", "logs", "-p", word, "-t", "prio", "-n", "100"])
        assert res.exit_code == 0, res.output
        shown = sorted(e["priority"] for e in json.loads(res.output))
        assert shown == sorted(p for p in expected.values() if p <= n), word


def test_ipcctl_send_priority_critical_is_stored_as_2(ipcd: Ipcd) -> None:
    res = CliRunner().invoke(cli, ["--socket", ipcd.sock, "send", "-p", "critical", "-t", "crit", "it broke"])
    assert res.exit_code == 0, res.output
    entries = wait_for(lambda: ipcd.call("logs.query", {"ident": "crit"})["entries"], 5, "the entry")
    assert [(e["facility"], e["priority"], e["message"]) for e in entries] == [(1, 2, "it broke")]
