"""The layers, as imports: `ipcd.wire` stays sans-IO, and the client side never loads the server side.

No module under ipcd/wire/ imports a socket, a thread, a database or a
clock; `import ipcd.client` and `import ipcd.ctl.cli` load nothing of
`daemon`, `control`, `logs` or `state`.

import-linter (`make lint`) checks the layers between ipcd's own packages;
this checks what it cannot: the standard library modules that would bring I/O
into the formats, and what an import really loads.  Every import counts, wherever it is (in a function, under
`if TYPE_CHECKING:`), and so do `__import__("x")` and
`importlib.import_module("x")` with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

WIRE = ROOT / "ipcd" / "wire"
FORBIDDEN = ("socket", "select", "threading", "sqlite3", "time")
# Of ipcd itself, the formats may use the error classes and each other.
ALLOWED_IPCD = ("ipcd.errors", "ipcd.wire")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported_names(tree: ast.Module, package: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a module imports; relative imports resolved against `package`.

    `from m import n` gives `m.n`: n may be a submodule (`from ipcd import config`).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = ast.unparse(node.func)
            if func in ("__import__", "importlib.import_module") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def why_not(name: str) -> str | None:
    """What is wrong with importing `name` in the wire layer, or None."""
    top = name.split(".")[0]
    if top in FORBIDDEN:
        return f"{top} (sans-IO: no sockets, threads, databases or clocks)"
    if top == "ipcd" and not any(_under(name, allowed) for allowed in ALLOWED_IPCD):
        return f"{name} (may import only {' and '.join(ALLOWED_IPCD)})"
    return None


def wire_violations(directory: Path, package: str) -> tuple[list[str], list[Path]]:
    """(violations as "path:line: imports ...", the modules checked) for the package in `directory`."""
    found: list[str] = []
    modules = sorted(directory.rglob("*.py"))
    for path in modules:
        rel = path.relative_to(directory)
        subpackage = ".".join((package, *rel.parent.parts))  # the package a relative import starts from
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, name in imported_names(tree, subpackage):
            reason = why_not(name)
            if reason is not None:
                found.append(f"{path}:{line}: imports {reason}")
    return found, modules


def test_wire_imports_no_io() -> None:
    violations, modules = wire_violations(WIRE, "ipcd.wire")
    assert {p.name for p in modules} >= {"__init__.py", "jsonrpc.py", "logparse.py"}  # it looked at the real thing
    assert violations == []


BAD = [
    ("import socket\n", "socket"),
    ("import os, select\n", "select"),
    ("import threading as th\n", "threading"),
    ("from sqlite3 import connect\n", "sqlite3"),
    ("from time import monotonic\n", "time"),
    ("def now():\n    import time\n\n    return time.time()\n", "time"),
    ("class Framer:\n    def feed(self):\n        from select import poll\n", "select"),
    ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import socket\n", "socket"),
    ("clock = __import__('time')\n", "time"),
    ("import importlib\n\nsock = importlib.import_module('socket')\n", "socket"),
    ("from ipcd import config\n", "ipcd.config"),
    ("from ipcd.control import registry\n", "ipcd.control.registry"),
    ("import ipcd.daemon.binding\n", "ipcd.daemon.binding"),
    ("from .. import config\n", "ipcd.config"),
    ("from ..logs.store import LogStore\n", "ipcd.logs.store.LogStore"),
    ("def late():\n    from ipcd.client import Client\n", "ipcd.client.Client"),
]

GOOD = [
    "from __future__ import annotations\n\nimport json\nimport re\nfrom typing import Any\n",
    "import datetime\nimport os.path\nimport struct\n",  # a timestamp format is not a clock
    "from ipcd.errors import ParseError\nimport ipcd.errors\nfrom ipcd import errors\n",
    "from ..errors import RpcError\nfrom . import jsonrpc\nfrom .logparse import parse_datagram\n",
    "import ipcd.wire.jsonrpc\nfrom ipcd.wire import logparse\n",
    "import sockets_of_my_own\nimport timeit_like\n",  # names that only start like a forbidden one
]


def write_wire(root: Path, source: str) -> Path:
    """A copy of the layout, ipcd/wire/, with one module of `source` next to a clean one."""
    wire = root / "ipcd" / "wire"
    wire.mkdir(parents=True)
    (wire / "__init__.py").write_text('"""Sans-IO."""\n')
    (wire / "fmt.py").write_text(source)
    return wire


@pytest.mark.parametrize(("source", "name"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_the_check_fails_on_a_bad_module(tmp_path: Path, source: str, name: str) -> None:
    wire = write_wire(tmp_path, source)
    violations, _ = wire_violations(wire, "ipcd.wire")
    assert len(violations) == 1, violations
    assert violations[0].startswith(f"{wire / 'fmt.py'}:") and f"imports {name}" in violations[0]


@pytest.mark.parametrize("source", GOOD, ids=[f"good{i}" for i in range(len(GOOD))])
def test_the_check_passes_a_clean_module(tmp_path: Path, source: str) -> None:
    violations, modules = wire_violations(write_wire(tmp_path, source), "ipcd.wire")
    assert violations == [] and len(modules) == 2


def test_a_bad_module_in_a_subpackage_is_found(tmp_path: Path) -> None:
    wire = write_wire(tmp_path, "import json\n")
    (wire / "codecs").mkdir()
    (wire / "codecs" / "__init__.py").write_text("")
    (wire / "codecs" / "frame.py").write_text("from ...control import server\nfrom .. import jsonrpc\n")
    violations, _ = wire_violations(wire, "ipcd.wire")
    assert violations == [
        f"{wire / 'codecs' / 'frame.py'}:1: imports ipcd.control.server (may import only {' and '.join(ALLOWED_IPCD)})"
    ]


# -- the client side never loads the server side --------------------------------------------------


CLIENT_SIDE = {
    "ipcd",
    "ipcd.client",
    "ipcd.client.connection",
    "ipcd.client.errors",
    "ipcd.client.handler",
    "ipcd.client.resolve",
    "ipcd.client.trust",
    "ipcd.config",
    "ipcd.configfile",
    "ipcd.errors",
    "ipcd.wire",
    "ipcd.wire.jsonrpc",
    "ipcd.wire.priority",
    "ipcd.wire.shellwords",
}


def test_the_client_never_imports_the_server_side() -> None:
    code = "import sys, ipcd.client; print(' '.join(sorted(m for m in sys.modules if m.startswith('ipcd'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= CLIENT_SIDE, out


# What `ipcctl` may load: itself, the client, wire, config, errors (STYLE.md "Layout").
CTL_SIDE = {
    "ipcd",
    "ipcd.dirs",
    "ipcd.client",
    "ipcd.client.connection",
    "ipcd.client.errors",
    "ipcd.client.handler",
    "ipcd.client.resolve",
    "ipcd.client.trust",
    "ipcd.config",
    "ipcd.configfile",
    "ipcd.ctl",
    "ipcd.ctl.admin",
    "ipcd.ctl.checks_service",
    "ipcd.ctl.checks_sockets",
    "ipcd.ctl.checkup",
    "ipcd.ctl.cli",
    "ipcd.ctl.common",
    "ipcd.ctl.completion",
    "ipcd.ctl.doctor",
    "ipcd.ctl.errors",
    "ipcd.ctl.escape",
    "ipcd.ctl.forward",
    "ipcd.ctl.ipc",
    "ipcd.ctl.logfmt",
    "ipcd.ctl.logparams",
    "ipcd.ctl.logs",
    "ipcd.ctl.streaming",
    "ipcd.ctl.timespec",
    "ipcd.ctl.metrics",
    "ipcd.errors",
    "ipcd.wire",
    "ipcd.wire.jsonrpc",
    "ipcd.wire.priority",
    "ipcd.wire.shellwords",
}


def test_doctor_imports_nothing_of_the_server_side() -> None:
    code = "import sys, ipcd.ctl.cli; print(' '.join(sorted(m for m in sys.modules if m.startswith('ipcd'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True).stdout
    assert set(out.split()) <= CTL_SIDE, sorted(set(out.split()) - CTL_SIDE)
