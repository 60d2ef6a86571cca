"""The shipped unit keeps no network; contrib/systemd/forward-network.conf opens it, at a measured cost."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import ROOT
from test_daemon_units import UNITS, analyze, exposure, installed, needs_analyze, unit_value

__all__ = ["installed"]  # the fixture, used here
DROP_IN = ROOT / "contrib/systemd/forward-network.conf"


def test_the_shipped_unit_has_no_network() -> None:
    text = (ROOT / "systemd/ipcd.service").read_text()
    assert unit_value(text, "PrivateNetwork") == "yes"
    assert unit_value(text, "RestrictAddressFamilies") == "AF_UNIX"
    assert unit_value(text, "IPAddressDeny") == "any"


@needs_analyze
def test_the_network_drop_in_verifies_and_costs_what_the_readme_says(installed: tuple[Path, object]) -> None:
    d, _ = installed
    service = str(d / "ipcd.service")
    before = exposure(analyze("security", "--offline=true", service, unit_path=d).stdout)
    (d / "ipcd.service.d").mkdir()
    shutil.copy(DROP_IN, d / "ipcd.service.d" / DROP_IN.name)
    res = analyze("verify", "--man=no", *(str(d / u) for u in UNITS), unit_path=d)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    res = analyze("security", "--offline=true", "ipcd.service", unit_path=d)
    after = exposure(res.stdout)
    assert "Service may allocate Internet sockets" in res.stdout and "host's network" in res.stdout
    assert (before, after) == (0.6, 1.5)  # README "Beyond one machine" and the drop-in's comment say so
    readme = (ROOT / "README.md").read_text()
    assert "from 0.6 to 1.5" in DROP_IN.read_text() and "0.6 to 1.5" in readme
