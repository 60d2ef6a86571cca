"""`ipcd.ctl.cli`: how ipcctl is put together: every command added in one place, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import click
from conftest import ROOT

from ipcd.ctl.cli import cli


def _imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that the module at `path` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith(package + ".")}
    return found


def test_ipcctl_modules_import_without_a_cycle() -> None:
    """Commands import what they share (`common`, `errors`); only `cli` imports the commands."""
    folder = ROOT / "ipcd" / "ctl"
    modules = {f"ipcd.ctl.{p.stem}": p for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}
    graph = {name: _imports(path, "ipcd.ctl") & modules.keys() for name, path in modules.items()}
    assert not any("ipcd.ctl.cli" in deps for deps in graph.values()), graph
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_every_command_is_added_in_cli() -> None:
    assert isinstance(cli, click.Group)
    ctx = click.Context(cli)
    assert all(isinstance(cli.get_command(ctx, name), click.Command) for name in cli.list_commands(ctx))
    assert set(cli.list_commands(ctx)) == {
        "status",
        "ping",
        "call",
        "shutdown",
        "reload",
        "clients",
        "logs",
        "send",
        "kv",
        "publish",
        "subscribe",
        "doctor",
        "completion",
        "metrics",
    }
    for path in (ROOT / "ipcd" / "ctl").glob("*.py"):
        assert "def register(" not in path.read_text(), path
