"""The man pages: current with the click commands and the config schema, and clean under groff."""

from __future__ import annotations

import dataclasses
import runpy
import shutil
import subprocess

import pytest
from conftest import ROOT

from ipcd import config

PAGES = ROOT / "ipcd" / "manpages"
GENERATOR = runpy.run_path(str(ROOT / "tools" / "manpages.py"))


@pytest.mark.parametrize("name", sorted(GENERATOR["PAGES"]))
def test_page_is_current(name: str) -> None:
    """Regenerate with: make man (python tools/manpages.py)."""
    assert (PAGES / name).read_text() == GENERATOR["PAGES"][name]()


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (Debian: groff-base)")
@pytest.mark.parametrize("name", sorted(GENERATOR["PAGES"]))
def test_page_renders_without_a_warning(name: str) -> None:
    res = subprocess.run(["groff", "-man", "-ww", "-z", str(PAGES / name)], capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (0, "")
    text = subprocess.run(
        ["groff", "-man", "-Tutf8", "-P", "-cbou", str(PAGES / name)], capture_output=True, text=True, timeout=30
    )
    assert "NAME" in text.stdout and "SEE ALSO" in text.stdout


def test_pages_cover_every_command_and_key() -> None:
    ipcctl = (PAGES / "ipcctl.1").read_text()
    for command in ("logs", "kv get", "kv ls", "subscribe", "completion", "doctor"):
        assert f'.SS "ipcctl {command} ' in ipcctl, command
    assert "\\-\\-no\\-pager" in ipcctl and "\\-\\-reverse" in ipcctl
    toml = (PAGES / "ipcd.toml.5").read_text()
    for key in ("max_connections", "rate_limit_burst", "max_entries", "max_value_bytes", "admin_uids"):
        assert f".B {key.replace('_', '_')}" in toml, key
    forward = toml.split('.SH "[[forward]]"\n', 1)[1]
    for f in dataclasses.fields(config.ForwardConfig):
        assert f".B {f.name}\n" in forward, f.name
    assert '"info" (one of debug, info, warning, error)' in toml
    assert '"normal" (one of normal, fsync)' in toml
    assert "install\\-units" in (PAGES / "ipcd.8").read_text()


def test_a_groff_warning_fails_the_check(tmp_path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("needs groff (Debian: groff-base)")
    bad = tmp_path / "bad.1"
    bad.write_text(".TH BAD 1\n.SH NAME\nbad \\- x\n.XX unknown macro\n\\f(ZZbad font\n")
    res = subprocess.run(["groff", "-man", "-ww", "-z", str(bad)], capture_output=True, text=True, timeout=30)
    assert res.stderr != ""
