"""`ipcd.daemon.command`: the `ipcd` command line: --version, config errors (exit 78), --check-config, --log-level."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import Ipcd


def test_version_everywhere() -> None:
    from conftest import BIN

    from ipcd import __version__

    for argv in (
        [str(BIN / "ipcd"), "--version"],
        [str(BIN / "ipcctl"), "--version"],
        [sys.executable, "-m", "ipcd", "--version"],
    ):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        assert __version__ in out, argv


def test_config_error_exits_78_naming_file_line_key(make_ipcd) -> None:
    d: Ipcd = make_ipcd('[control]\nmax_connections = 10\nidle_timeout_s = "soon"\n')
    d.start(wait=False)
    assert d.wait() == 78
    err = d.stderr()
    assert f"{d.config}:3:" in err and "control.idle_timeout_s" in err


def test_missing_named_config_is_an_error(make_ipcd) -> None:
    d: Ipcd = make_ipcd()
    d.config.unlink()
    d.start(wait=False)
    assert d.wait() == 78
    assert "no such file" in d.stderr()


def test_check_config_prints_effective_settings(make_ipcd) -> None:
    d: Ipcd = make_ipcd("[control]\nmax_connections = 9\n")
    out = subprocess.run(d.argv("--check-config"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["control"]["max_connections"] == 9
    assert doc["control"]["socket_mode"] == "0660"
    assert doc["runtime_dir"] == str(d.run_dir)


def test_log_level_option_wins_over_the_config_across_reloads(make_ipcd) -> None:
    """`--log-level` outlasts a reload; without it, the config's level is what a reload sets."""
    on_option: Ipcd = make_ipcd('[daemon]\nlog_level = "info"\n', name="option").start("--log-level", "error")
    on_config: Ipcd = make_ipcd('[daemon]\nlog_level = "info"\n', name="config").start()
    for d in (on_option, on_config):
        assert d.call("reload")["reloaded"]
        assert d.stop() == 0
    assert "reloaded config from" in on_config.stderr()
    assert "INFO" not in on_option.stderr(), on_option.stderr()
