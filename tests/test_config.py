"""`ipcd.config`: the directory rules and the TOML file, `[[forward]]` tables included.

The rules are DESIGN.md "Processes and sockets" (first match wins) and
"Config" (a bad file is an error naming the file, the line and the key).
Everything is passed in: an env dict, a uid, bytes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN

from ipcd import config
from ipcd.config import (
    AccessConfig,
    Config,
    ControlConfig,
    DaemonConfig,
    ForwardConfig,
    KvConfig,
    LogConfig,
    MetricsConfig,
    StoreConfig,
    config_path,
    load,
    parse,
    parse_mode,
    runtime_dir,
    state_dir,
    to_dict,
)
from ipcd.errors import ConfigError

ROOT, USER = 0, 1000
MiB = 1024 * 1024

# -- runtime dir ------------------------------------------------------------

ALL_RUNTIME = {
    "IPCD_RUNTIME_DIR": "/srv/ipcd-env",
    "RUNTIME_DIRECTORY": "/run/ipcd-systemd",
    "XDG_RUNTIME_DIR": "/run/user/1000",
    "HOME": "/home/alice",
}


@pytest.mark.parametrize(
    ("option", "env", "uid", "expected"),
    [
        # --runtime-dir beats everything, for root and for users
        ("/opt/run", ALL_RUNTIME, USER, "/opt/run"),
        ("/opt/run", ALL_RUNTIME, ROOT, "/opt/run"),
        # then $IPCD_RUNTIME_DIR
        (None, ALL_RUNTIME, USER, "/srv/ipcd-env"),
        (None, ALL_RUNTIME, ROOT, "/srv/ipcd-env"),
        # then systemd's $RUNTIME_DIRECTORY, the first of a ":"-joined list
        (None, {**ALL_RUNTIME, "IPCD_RUNTIME_DIR": ""}, USER, "/run/ipcd-systemd"),
        (None, {"RUNTIME_DIRECTORY": "/run/ipcd-systemd"}, ROOT, "/run/ipcd-systemd"),
        (None, {"RUNTIME_DIRECTORY": "/run/a:/run/b", "XDG_RUNTIME_DIR": "/run/user/1000"}, USER, "/run/a"),
        (None, {"RUNTIME_DIRECTORY": "/run/a:/run/b:/run/c"}, ROOT, "/run/a"),
        # then /run/ipcd for root, even with an XDG_RUNTIME_DIR (sudo -E)
        (None, {}, ROOT, "/run/ipcd"),
        (None, {"XDG_RUNTIME_DIR": "/run/user/0", "HOME": "/root"}, ROOT, "/run/ipcd"),
        # then $XDG_RUNTIME_DIR/ipcd
        (None, {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/alice"}, USER, "/run/user/1000/ipcd"),
        (None, {"XDG_RUNTIME_DIR": "/run/user/4242"}, 4242, "/run/user/4242/ipcd"),
        # then /tmp/ipcd-$UID
        (None, {}, USER, "/tmp/ipcd-1000"),
        (None, {"HOME": "/home/alice"}, 4242, "/tmp/ipcd-4242"),
        (None, {}, 65534, "/tmp/ipcd-65534"),
        # an empty variable counts as unset
        (None, {"IPCD_RUNTIME_DIR": "", "RUNTIME_DIRECTORY": "", "XDG_RUNTIME_DIR": ""}, USER, "/tmp/ipcd-1000"),
        (None, {"IPCD_RUNTIME_DIR": "", "RUNTIME_DIRECTORY": ""}, ROOT, "/run/ipcd"),
        # other directories' variables do not leak in
        (
            None,
            {"STATE_DIRECTORY": "/var/lib/x", "IPCD_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"},
            USER,
            "/tmp/ipcd-1000",
        ),
    ],
)
def test_runtime_dir(option: str | None, env: dict[str, str], uid: int, expected: str) -> None:
    got = runtime_dir(option, env, uid)
    assert isinstance(got, Path)
    assert got == Path(expected)


# -- state dir --------------------------------------------------------------

ALL_STATE = {
    "IPCD_STATE_DIR": "/srv/state-env",
    "STATE_DIRECTORY": "/var/lib/ipcd-systemd",
    "XDG_STATE_HOME": "/home/alice/.xdg-state",
    "HOME": "/home/alice",
}


@pytest.mark.parametrize(
    ("option", "env", "uid", "expected"),
    [
        ("/opt/state", ALL_STATE, USER, "/opt/state"),
        ("/opt/state", ALL_STATE, ROOT, "/opt/state"),
        (None, ALL_STATE, USER, "/srv/state-env"),
        (None, ALL_STATE, ROOT, "/srv/state-env"),
        (None, {**ALL_STATE, "IPCD_STATE_DIR": ""}, USER, "/var/lib/ipcd-systemd"),
        (None, {"STATE_DIRECTORY": "/var/lib/ipcd-systemd"}, ROOT, "/var/lib/ipcd-systemd"),
        (None, {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b", "XDG_STATE_HOME": "/x"}, USER, "/var/lib/a"),
        (None, {}, ROOT, "/var/lib/ipcd"),
        (None, {"XDG_STATE_HOME": "/root/.local/state", "HOME": "/root"}, ROOT, "/var/lib/ipcd"),
        (
            None,
            {"XDG_STATE_HOME": "/home/alice/.xdg-state", "HOME": "/home/alice"},
            USER,
            "/home/alice/.xdg-state/ipcd",
        ),
        # the last fallback uses HOME from the env passed in
        (None, {"HOME": "/home/alice"}, USER, "/home/alice/.local/state/ipcd"),
        (None, {"HOME": "/var/empty/bob"}, 4242, "/var/empty/bob/.local/state/ipcd"),
        (None, {"HOME": "/home/alice", "XDG_STATE_HOME": ""}, USER, "/home/alice/.local/state/ipcd"),
        (
            None,
            {"HOME": "/home/alice", "IPCD_STATE_DIR": "", "STATE_DIRECTORY": ""},
            USER,
            "/home/alice/.local/state/ipcd",
        ),
        # other directories' variables do not leak in
        (None, {"HOME": "/h", "RUNTIME_DIRECTORY": "/r", "XDG_RUNTIME_DIR": "/x"}, USER, "/h/.local/state/ipcd"),
    ],
)
def test_state_dir(option: str | None, env: dict[str, str], uid: int, expected: str) -> None:
    got = state_dir(option, env, uid)
    assert isinstance(got, Path)
    assert got == Path(expected)


def test_state_dir_without_home_in_env_falls_back_to_the_process_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/from-os-environ")
    assert state_dir(None, {}, USER) == Path("/home/from-os-environ/.local/state/ipcd")


# -- config path --------------------------------------------------------------

ALL_CONFIG = {
    "IPCD_CONFIG": "/srv/env.toml",
    "CONFIGURATION_DIRECTORY": "/etc/ipcd-systemd",
    "XDG_CONFIG_HOME": "/home/alice/.xdg-config",
    "HOME": "/home/alice",
}


@pytest.mark.parametrize(
    ("option", "env", "uid", "expected", "named"),
    [
        # --config and $IPCD_CONFIG are named: they must exist
        ("/opt/ipcd.toml", ALL_CONFIG, USER, "/opt/ipcd.toml", True),
        ("/opt/ipcd.toml", ALL_CONFIG, ROOT, "/opt/ipcd.toml", True),
        ("relative.toml", {}, USER, "relative.toml", True),
        (None, ALL_CONFIG, USER, "/srv/env.toml", True),
        (None, ALL_CONFIG, ROOT, "/srv/env.toml", True),
        # the rest are defaults: a missing file means defaults
        (None, {**ALL_CONFIG, "IPCD_CONFIG": ""}, USER, "/etc/ipcd-systemd/ipcd.toml", False),
        (None, {"CONFIGURATION_DIRECTORY": "/etc/ipcd-systemd"}, ROOT, "/etc/ipcd-systemd/ipcd.toml", False),
        (None, {"CONFIGURATION_DIRECTORY": "/etc/a:/etc/b", "XDG_CONFIG_HOME": "/x"}, USER, "/etc/a/ipcd.toml", False),
        (None, {}, ROOT, "/etc/ipcd/ipcd.toml", False),
        (None, {"XDG_CONFIG_HOME": "/root/.config", "HOME": "/root"}, ROOT, "/etc/ipcd/ipcd.toml", False),
        (None, {"XDG_CONFIG_HOME": "/home/alice/.xdg-config"}, USER, "/home/alice/.xdg-config/ipcd/ipcd.toml", False),
        (None, {"HOME": "/home/alice"}, USER, "/home/alice/.config/ipcd/ipcd.toml", False),
        (None, {"HOME": "/home/alice", "XDG_CONFIG_HOME": ""}, USER, "/home/alice/.config/ipcd/ipcd.toml", False),
        (
            None,
            {"HOME": "/home/alice", "IPCD_CONFIG": "", "CONFIGURATION_DIRECTORY": ""},
            USER,
            "/home/alice/.config/ipcd/ipcd.toml",
            False,
        ),
    ],
)
def test_config_path(option: str | None, env: dict[str, str], uid: int, expected: str, named: bool) -> None:
    path, is_named = config_path(option, env, uid)
    assert isinstance(path, Path)
    assert path == Path(expected)
    assert is_named is named


def test_config_path_without_home_in_env_falls_back_to_the_process_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/from-os-environ")
    assert config_path(None, {}, USER) == (Path("/home/from-os-environ/.config/ipcd/ipcd.toml"), False)


# -- load -----------------------------------------------------------------


def test_load_none_is_defaults() -> None:
    cfg = load(None)
    assert cfg == Config()
    assert cfg.path is None
    assert cfg.explicit == frozenset()


def test_load_missing_default_file_is_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path / "ipcd.toml", named=False)
    assert cfg == Config()
    assert cfg.path is None
    assert cfg.explicit == frozenset()


def test_load_missing_named_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing, named=True)
    assert str(info.value) == f"{missing}: no such file"
    assert info.value.path == str(missing)
    assert info.value.line is None


def test_load_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, named=True)
    assert str(info.value).startswith(f"{tmp_path}: ")
    assert info.value.path == str(tmp_path)


def test_load_reads_the_file(tmp_path: Path) -> None:
    f = tmp_path / "ipcd.toml"
    f.write_text('[control]\nmax_connections = 7\nsocket_mode = "0600"\n')
    for named in (False, True):
        cfg = load(f, named=named)
        assert cfg.control.max_connections == 7
        assert cfg.control.socket_mode == 0o600
        assert cfg.path == str(f)
        assert cfg.explicit == {"control.max_connections", "control.socket_mode"}


def test_load_an_empty_file_is_defaults_from_that_file(tmp_path: Path) -> None:
    f = tmp_path / "ipcd.toml"
    f.write_bytes(b"")
    cfg = load(f, named=True)
    assert dataclasses.replace(cfg, path=None) == Config()
    assert cfg.path == str(f)


def test_load_errors_name_the_real_path(tmp_path: Path) -> None:
    f = tmp_path / "ipcd.toml"
    f.write_text("[kv]\nmax_keys = 0\n")
    with pytest.raises(ConfigError) as info:
        load(f)
    assert str(info.value).startswith(f"{f}:2: kv.max_keys: ")


def test_named_config_from_the_environment_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "from-env.toml"
    path, named = config_path(None, {"IPCD_CONFIG": str(missing)}, USER)
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: no such file")):
        load(path, named)


# -- parse: valid files ---------------------------------------------------------

FULL = b"""\
# every key, every section
[daemon]
log_level = "debug"
status_interval_s = 2.5
control_nice = 3
malloc_arenas = 4

[control]
max_connections = 10
max_connections_per_uid = 3
admin_reserved_connections = 2
max_request_bytes = 4096
max_batch = 20
idle_timeout_s = 60          # an integer where a number goes
stream_queue = 16
max_queued_bytes_per_connection = 131072
max_queued_bytes = 2097152
max_inflight_request_bytes = 65536
max_streams_per_connection = 5
query_timeout_s = 0.5
socket_mode = "0600"
socket_group = "wheel"

[log]
max_datagram_bytes = 2048
rate_limit_burst = 0
rate_limit_interval_s = 0.5
receive_buffer_bytes = 65536
socket_mode = 0o640
follow_max_lag = 500
max_senders = 100

[store]
max_entries = 5000
max_bytes = 2097152
max_age_s = 86400
commit_interval_ms = 10
commit_batch = 100
retention_interval_s = 1.5
max_pending = 50
max_pending_bytes = 2097152

[kv]
max_value_bytes = 100
max_keys = 7
max_bytes = 1000
durability = "fsync"

[access]
admin_uids = [0, "alice"]
admin_groups = ["wheel"]
write_uids = [1000, 1001]
write_groups = []

[metrics]
textfile = "/var/lib/node_exporter/ipcd.prom"
interval_s = 30
"""

ALL_KEYS = frozenset(f"{name}.{f.name}" for name, cls in config.SECTIONS.items() for f in dataclasses.fields(cls))


def test_parse_every_key() -> None:
    cfg = parse(FULL, "/etc/ipcd/ipcd.toml")
    assert cfg.path == "/etc/ipcd/ipcd.toml"
    assert cfg.daemon == DaemonConfig(log_level="debug", status_interval_s=2.5, control_nice=3, malloc_arenas=4)
    assert cfg.control == ControlConfig(
        max_connections=10,
        max_connections_per_uid=3,
        admin_reserved_connections=2,
        max_request_bytes=4096,
        max_batch=20,
        idle_timeout_s=60.0,
        stream_queue=16,
        max_queued_bytes_per_connection=131072,
        max_queued_bytes=2097152,
        max_inflight_request_bytes=65536,
        max_streams_per_connection=5,
        query_timeout_s=0.5,
        socket_mode=0o600,
        socket_group="wheel",
    )
    assert cfg.log == LogConfig(
        max_datagram_bytes=2048,
        rate_limit_burst=0,
        rate_limit_interval_s=0.5,
        receive_buffer_bytes=65536,
        socket_mode=0o640,
        follow_max_lag=500,
        max_senders=100,
    )
    assert cfg.store == StoreConfig(
        max_entries=5000,
        max_bytes=2 * MiB,
        max_age_s=86400.0,
        commit_interval_ms=10,
        commit_batch=100,
        retention_interval_s=1.5,
        max_pending=50,
        max_pending_bytes=2097152,
    )
    assert cfg.kv == KvConfig(max_value_bytes=100, max_keys=7, max_bytes=1000, durability="fsync")
    assert cfg.access == AccessConfig(
        admin_uids=[0, "alice"], admin_groups=["wheel"], write_uids=[1000, 1001], write_groups=[]
    )
    assert cfg.metrics == MetricsConfig(textfile="/var/lib/node_exporter/ipcd.prom", interval_s=30.0)
    assert cfg.explicit == ALL_KEYS
    assert len(ALL_KEYS) == 43  # a new key needs a line in FULL


def test_parse_turns_integers_into_floats_for_number_keys() -> None:
    cfg = parse(FULL)
    assert type(cfg.control.idle_timeout_s) is float
    assert type(cfg.store.max_age_s) is float
    assert type(cfg.control.max_connections) is int


def test_parse_empty_file_is_defaults() -> None:
    cfg = parse(b"")
    assert dataclasses.replace(cfg, path=None) == Config()
    assert cfg.path == "<config>"
    assert cfg.explicit == frozenset()


def test_defaults() -> None:
    cfg = Config()
    assert cfg.daemon.log_level == "info"
    assert cfg.control.max_connections == 256
    assert cfg.control.max_request_bytes == MiB
    assert cfg.control.idle_timeout_s == 300.0
    assert cfg.control.socket_mode == 0o660
    assert cfg.control.socket_group == "ipcd"
    assert cfg.log.max_datagram_bytes == 65536
    assert cfg.log.rate_limit_burst == 10000
    assert cfg.log.rate_limit_interval_s == 30.0
    assert cfg.log.socket_mode == 0o666
    assert cfg.store.commit_interval_ms == 50
    assert cfg.access.admin_uids == []
    # list defaults are not shared between instances
    a, b = Config(), Config()
    a.access.admin_uids.append(0)
    assert b.access.admin_uids == []


def test_explicit_holds_only_the_keys_the_file_sets() -> None:
    cfg = parse(b'[control]\nmax_connections = 5\n\n[log]\nsocket_mode = "0644"\n\n[store]\n')
    assert cfg.explicit == {"control.max_connections", "log.socket_mode"}
    assert cfg.control.max_connections == 5
    assert cfg.control.max_request_bytes == MiB  # untouched keys keep their defaults
    assert cfg.control.socket_mode == 0o660  # control's mode is not log's
    assert cfg.log.socket_mode == 0o644
    assert cfg.store == StoreConfig()
    assert cfg.daemon == DaemonConfig()


@pytest.mark.parametrize(
    "text",
    [
        b"control.max_connections = 5\nkv.max_keys = 9\n",  # dotted keys at the top
        b"control = { max_connections = 5 }\nkv = { max_keys = 9 }\n",  # inline tables
        b"[control]\nmax_connections = 5\n[kv]\nmax_keys = 9\n",
        b"  [ control ]  # with blanks and a comment\n   max_connections   =   5\n[kv]\nmax_keys=9",
    ],
)
def test_parse_any_toml_spelling(text: bytes) -> None:
    cfg = parse(text)
    assert cfg.control.max_connections == 5
    assert cfg.kv.max_keys == 9
    assert cfg.explicit == {"control.max_connections", "kv.max_keys"}


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ('"0660"', 0o660),
        ('"660"', 0o660),
        ('"0600"', 0o600),
        ('"0777"', 0o777),
        ('"0000"', 0),
        ('"000"', 0),
        ("'0644'", 0o644),
        ("0o660", 0o660),
        ("0o777", 0o777),
        ("0o0", 0),
        ("432", 0o660),  # a TOML integer is the mode's value
        ("0", 0),
    ],
)
@pytest.mark.parametrize("section", ["control", "log"])
def test_socket_mode(section: str, value: str, mode: int) -> None:
    cfg = parse(f"[{section}]\nsocket_mode = {value}\n".encode())
    assert getattr(cfg, section).socket_mode == mode
    assert cfg.explicit == {f"{section}.socket_mode"}


@pytest.mark.parametrize(
    ("value", "mode"),
    [("0660", 0o660), ("660", 0o660), ("0000", 0), (0o640, 0o640), (0, 0), (0o777, 0o777)],
)
def test_parse_mode(value: Any, mode: int) -> None:
    assert parse_mode(value) == mode


@pytest.mark.parametrize(
    "value", ["0o660", "rw-rw----", "0888", "06600", "60", "", "0x1b0", " 0660", 0o1000, -1, 1.5, True, None, [0o660]]
)
def test_parse_mode_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="must be an octal mode"):
        parse_mode(value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("control.max_connections", "1"),
        ("control.max_connections", "65536"),
        ("control.max_request_bytes", "64"),
        ("control.max_request_bytes", str(64 * MiB)),
        ("control.idle_timeout_s", "0.05"),
        ("control.idle_timeout_s", "86400"),
        ("daemon.status_interval_s", "0.1"),
        ("daemon.status_interval_s", "3600"),
        ("log.rate_limit_burst", "0"),
        ("log.max_datagram_bytes", str(16 * MiB)),
        ("store.max_age_s", "0"),
        ("store.max_bytes", str(MiB)),
        ("store.max_bytes", str(2**50)),
        ("store.commit_interval_ms", "60000"),
        ("kv.max_value_bytes", "1"),
        ("daemon.log_level", '"warning"'),
        ("daemon.log_level", '"error"'),
        ("access.admin_uids", "[]"),
        ("access.admin_groups", '[0, "adm", 65534]'),
    ],
)
def test_values_at_the_edges_are_accepted(key: str, value: str) -> None:
    section, name = key.split(".")
    cfg = parse(f"[{section}]\n{name} = {value}\n".encode())
    assert cfg.explicit == {key}
    got = getattr(getattr(cfg, section), name)
    expected = tomllib.loads(f"v = {value}")["v"]
    assert got == expected


# -- parse: errors name the file, the line and the key ----------------------------

PATH = "/etc/ipcd/ipcd.toml"


def parse_error(text: bytes | str, path: str = PATH) -> ConfigError:
    raw = text.encode() if isinstance(text, str) else text
    with pytest.raises(ConfigError) as info:
        parse(raw, path)
    return info.value


def assert_names(err: ConfigError, line: int, key: str, path: str = PATH) -> None:
    """`path:line: key: ...`, and the same in the error's fields."""
    assert str(err).startswith(f"{path}:{line}: {key}: "), str(err)
    assert err.path == path
    assert err.line == line
    assert err.key == key


def test_unknown_key_on_line_4() -> None:
    err = parse_error("# ipcd\n[control]\nmax_connections = 5\nmax_conections = 6\nidle_timeout_s = 3\n")
    assert_names(err, 4, "control.max_conections")
    assert "unknown key" in str(err)
    # the message lists the keys that do exist
    assert "max_connections, max_connections_per_uid, admin_reserved_connections" in str(err)


def test_unknown_section() -> None:
    err = parse_error("[control]\nmax_connections = 5\n\n[contorl]\nmax_connections = 5\n")
    assert_names(err, 4, "contorl")
    assert "unknown section" in str(err)
    assert "[daemon], [control], [log], [store], [kv], [access]" in str(err)


def test_unknown_top_level_key_is_an_unknown_section() -> None:
    err = parse_error("# comment\n\nverbose = true\n")
    assert_names(err, 3, "verbose")
    assert "unknown section" in str(err)


@pytest.mark.parametrize("value", ["5", '"x"', "[1]", "true"])
def test_section_that_is_not_a_table(value: str) -> None:
    err = parse_error(f"control = {value}\n")
    assert_names(err, 1, "control")
    assert "must be a table" in str(err)


def test_section_that_is_not_a_table_after_others() -> None:
    err = parse_error("store = 1\n")
    assert_names(err, 1, "store")
    err = parse_error("# x\n# y\nkv = 3\n")
    assert_names(err, 3, "kv")


# (key, TOML value, what the message says)
TYPE_ERRORS = [
    ("control.max_connections", '"10"', "must be an integer, not a string"),
    ("control.max_connections", "true", "must be an integer, not a boolean"),
    ("control.max_connections", "10.0", "must be an integer, not a float"),
    ("control.max_connections", "1.5", "must be an integer, not a float"),
    ("control.max_connections", "[10]", "must be an integer, not an array"),
    ("control.max_connections", "{ n = 10 }", "must be an integer, not a table"),
    ("kv.max_keys", "1979-05-27", "must be an integer"),
    ("log.rate_limit_burst", "false", "must be an integer, not a boolean"),
    ("store.commit_interval_ms", "50.0", "must be an integer, not a float"),
    ("control.idle_timeout_s", '"300"', "must be a number, not a string"),
    ("control.idle_timeout_s", "true", "must be a number, not a boolean"),
    ("daemon.status_interval_s", "[5]", "must be a number, not an array"),
    ("control.socket_group", '""', "must be a non-empty string"),
    ("control.socket_group", "100", "must be a non-empty string"),
    ("daemon.log_level", '"verbose"', "must be one of debug, info, warning, error"),
    ("daemon.log_level", '"INFO"', "must be one of debug, info, warning, error"),
    ("daemon.log_level", "1", "must be one of debug, info, warning, error"),
    ("access.admin_uids", '"root"', "must be a list of ids (numbers) or names (strings)"),
    ("access.admin_uids", "0", "must be a list of ids"),
    ("access.admin_uids", "[-1]", "must be a list of ids"),
    ("access.admin_uids", "[true]", "must be a list of ids"),
    ("access.write_uids", '[""]', "must be a list of ids"),
    ("access.write_groups", "[1.5]", "must be a list of ids"),
    ("access.admin_groups", "[[0]]", "must be a list of ids"),
]

RANGE_ERRORS = [
    ("control.max_connections", "0", "must be at least 1, not 0"),
    ("control.max_connections", "-5", "must be at least 1, not -5"),
    ("control.max_connections", "65537", "must be at most 65536, not 65537"),
    ("control.max_connections_per_uid", "0", "must be at least 1, not 0"),
    ("control.max_request_bytes", "63", "must be at least 64, not 63"),
    ("control.max_request_bytes", str(64 * MiB + 1), f"must be at most {64 * MiB}, not {64 * MiB + 1}"),
    ("control.idle_timeout_s", "0.01", "must be at least 0.05, not 0.01"),
    ("control.idle_timeout_s", "86400.5", "must be at most 86400, not 86400.5"),
    ("control.idle_timeout_s", "inf", "must be a finite number, not inf"),
    ("control.idle_timeout_s", "-inf", "must be a finite number, not -inf"),
    ("control.stream_queue", "0", "must be at least 1, not 0"),
    ("control.query_timeout_s", "0", "must be at least 0.01, not 0"),
    ("daemon.status_interval_s", "0", "must be at least 0.1, not 0.0"),
    ("daemon.status_interval_s", "3601", "must be at most 3600, not 3601.0"),
    ("log.max_datagram_bytes", "63", "must be at least 64, not 63"),
    ("log.max_datagram_bytes", str(16 * MiB + 1), "must be at most"),
    ("log.rate_limit_burst", "-1", "must be at least 0, not -1"),
    ("log.rate_limit_interval_s", "0", "must be at least 0.001, not 0.0"),
    ("log.receive_buffer_bytes", "4095", "must be at least 4096, not 4095"),
    ("store.max_pending", "0", "must be at least 1, not 0"),
    ("store.max_entries", "0", "must be at least 1, not 0"),
    ("store.max_bytes", str(MiB - 1), f"must be at least {MiB}, not {MiB - 1}"),
    ("store.max_age_s", "-1", "must be at least 0, not -1.0"),
    ("store.commit_interval_ms", "60001", "must be at most 60000, not 60001"),
    ("store.commit_batch", "0", "must be at least 1, not 0"),
    ("store.retention_interval_s", "0.001", "must be at least 0.01, not 0.001"),
    ("kv.max_value_bytes", "0", "must be at least 1, not 0"),
    ("kv.max_keys", "0", "must be at least 1, not 0"),
]

MODE_ERRORS = [
    ("control.socket_mode", '"0o660"', "must be an octal mode such as \"0660\", not '0o660'"),
    ("control.socket_mode", '"rw-rw----"', 'must be an octal mode such as "0660"'),
    ("control.socket_mode", '"0888"', 'must be an octal mode such as "0660"'),
    ("control.socket_mode", '"06600"', 'must be an octal mode such as "0660"'),
    ("control.socket_mode", '""', 'must be an octal mode such as "0660"'),
    ("log.socket_mode", "660", 'must be an octal mode such as "0660", not 660'),  # decimal 660 > 0o777
    ("log.socket_mode", "0o1777", 'must be an octal mode such as "0660"'),
    ("log.socket_mode", "-1", 'must be an octal mode such as "0660", not -1'),
    ("log.socket_mode", "1.5", 'must be an octal mode such as "0660"'),
    ("log.socket_mode", "true", 'must be an octal mode such as "0660", not True'),
]


@pytest.mark.parametrize(("key", "value", "fragment"), TYPE_ERRORS + RANGE_ERRORS + MODE_ERRORS)
def test_bad_value_names_path_line_and_key(key: str, value: str, fragment: str) -> None:
    section, name = key.split(".")
    # the bad key on line 4, after a good one
    text = f"# ipcd.toml\n[{section}]\n\n{name} = {value}\n"
    err = parse_error(text)
    assert_names(err, 4, key)
    assert fragment in str(err), str(err)


@pytest.mark.parametrize(("key", "value", "fragment"), TYPE_ERRORS[:3] + RANGE_ERRORS[:3] + MODE_ERRORS[:2])
def test_bad_value_line_further_down(key: str, value: str, fragment: str) -> None:
    section, name = key.split(".")
    text = "\n".join(
        [
            "[daemon]",  # 1
            'log_level = "info"',  # 2
            "",  # 3
            "[kv]",  # 4
            "max_value_bytes = 100",  # 5
            f"[{section}]",  # 6
            "# a comment",  # 7
            f"{name} = {value}",  # 8
            "",
        ]
    )
    err = parse_error(text, "my.toml")
    assert_names(err, 8, key, "my.toml")
    assert fragment in str(err)


def test_line_is_the_keys_own_section_not_an_earlier_same_named_key() -> None:
    text = '[control]\nsocket_mode = "0660"\n[log]\nsocket_mode = "0999"\n'
    err = parse_error(text)
    assert_names(err, 4, "log.socket_mode")


def test_line_is_the_exact_key_not_a_longer_one_with_the_same_start() -> None:
    text = "[control]\nmax_connections_per_uid = 1\nmax_connections = 0\n"
    err = parse_error(text)
    assert_names(err, 3, "control.max_connections")


def test_line_ignores_comments_that_look_like_the_key() -> None:
    text = "[control]\n# max_connections = 5\nmax_connections = 0\n"
    err = parse_error(text)
    assert_names(err, 3, "control.max_connections")


def test_line_of_a_dotted_key() -> None:
    err = parse_error("# x\ncontrol.max_connections = 0\n")
    assert_names(err, 2, "control.max_connections")
    err = parse_error("# x\n\ncontrol.bogus = 1\n")
    assert_names(err, 3, "control.bogus")
    err = parse_error("[control]\nmax_connections = 5\nsub.key = 1\n")
    assert_names(err, 3, "control.sub")


def test_first_error_wins() -> None:
    err = parse_error("[control]\nmax_connections = 0\nbogus = 1\n")
    assert_names(err, 2, "control.max_connections")


def test_error_with_the_default_path_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse(b"[kv]\nmax_keys = -1\n")
    assert str(info.value).startswith("<config>:2: kv.max_keys: must be at least 1")


# -- parse: TOML syntax and encoding ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[control]\nmax_connections = 5\nidle_timeout_s = = 3\n", 3),
        ("[control]\nmax_connections = 5\nmax_connections = 6\n", 3),  # a duplicate key
        ("# x\n[control\nmax_connections = 5\n", 2),
        ("[control]\nmax_connections 5\n", 2),
        ("[control]\n\n\n\nsocket_group = 'a\nb'\n", 5),
        ("[control]\n[control]\n", 2),
        ('[daemon]\nlog_level = "info" trailing\n', 2),
    ],
)
def test_toml_syntax_error_names_path_and_line(text: str, line: int) -> None:
    err = parse_error(text)
    assert str(err).startswith(f"{PATH}:{line}: TOML syntax: "), str(err)
    assert err.path == PATH
    assert err.line == line
    assert err.key is None
    assert "(at line" not in str(err)  # the position is said once, up front


def test_not_utf8_names_the_file_and_byte() -> None:
    raw = b'[daemon]\nlog_level = "info"\n# caf\xe9\n'
    offset = raw.index(b"\xe9")
    err = parse_error(raw)
    assert str(err) == f"{PATH}:3: not UTF-8 (byte {offset})"
    assert err.path == PATH


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe[\x00k\x00v\x00]\x00", b"[kv]\nmax_keys = 1 # \xc3\n", b"\xed\xa0\x80 = 1\n"]
)
def test_not_utf8_is_a_config_error(raw: bytes) -> None:
    err = parse_error(raw)
    assert re.match(rf"{re.escape(PATH)}:\d+: not UTF-8 \(byte \d+\)$", str(err))


# -- to_dict ------------------------------------------------------------------


def test_to_dict_shape_of_the_defaults() -> None:
    d = to_dict(Config())
    assert list(d) == ["daemon", "control", "log", "store", "kv", "access", "metrics", "forward"]
    assert d["forward"] == []
    for name, cls in config.SECTIONS.items():
        assert list(d[name]) == [f.name for f in dataclasses.fields(cls)]
    assert d["metrics"] == {"textfile": "", "interval_s": 15.0}
    assert d["daemon"] == {"log_level": "info", "status_interval_s": 5.0, "control_nice": 10, "malloc_arenas": 2}
    assert d["control"]["socket_mode"] == "0660"
    assert d["log"]["socket_mode"] == "0666"
    assert d["control"]["max_request_bytes"] == MiB
    assert d["control"]["socket_group"] == "ipcd"
    assert d["access"] == {"admin_uids": [], "admin_groups": [], "write_uids": [], "write_groups": []}
    assert "path" not in d and "explicit" not in d
    json.dumps(d)  # what `ipcd --check-config` prints


@pytest.mark.parametrize(("mode", "text"), [(0o660, "0660"), (0o7, "0007"), (0, "0000"), (0o777, "0777")])
def test_to_dict_modes_are_four_octal_digits(mode: int, text: str) -> None:
    cfg = Config()
    cfg.control.socket_mode = mode
    cfg.log.socket_mode = mode
    d = to_dict(cfg)
    assert d["control"]["socket_mode"] == text
    assert d["log"]["socket_mode"] == text


def _toml_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)  # ints, strings, lists of them: JSON spelling is TOML spelling


def to_toml(d: dict[str, Any]) -> bytes:
    out = []
    for section, values in d.items():
        tables = values if isinstance(values, list) else [values]
        for table in tables:
            out.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
            out += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
            out.append("")
    return "\n".join(out).encode()


@pytest.mark.parametrize("source", [b"", FULL], ids=["defaults", "full"])
def test_to_dict_round_trips_through_parse(source: bytes) -> None:
    cfg = parse(source)
    d = to_dict(cfg)
    again = parse(to_toml(d), "round.toml")
    assert to_dict(again) == d
    for name in config.SECTIONS:
        assert getattr(again, name) == getattr(cfg, name)
    assert again.forward == cfg.forward
    assert again.explicit == ALL_KEYS


# -- values and spellings that are easy to get wrong ------------------------------


@pytest.mark.parametrize(
    "key", ["control.idle_timeout_s", "daemon.status_interval_s", "store.max_age_s", "log.rate_limit_interval_s"]
)
@pytest.mark.parametrize("spelling", ["nan", "+nan", "-nan"])
def test_nan_is_rejected(key: str, spelling: str) -> None:
    section, name = key.split(".")
    err = parse_error(f"[{section}]\n{name} = {spelling}\n")
    assert_names(err, 2, key)


def test_huge_integer_for_a_number_key_is_a_config_error() -> None:
    err = parse_error("[control]\nidle_timeout_s = 1" + "0" * 400 + "\n")
    assert_names(err, 2, "control.idle_timeout_s")


def test_integer_beyond_the_int_string_limit_is_a_config_error() -> None:
    limit = sys.get_int_max_str_digits()
    if limit == 0:
        pytest.skip("the int-string conversion limit is off in this interpreter")
    err = parse_error("[control]\n\nmax_connections = 1" + "0" * limit + "\n")
    assert str(err).startswith(f"{PATH}:")
    assert err.path == PATH


def test_not_utf8_names_the_line() -> None:
    err = parse_error(b'[daemon]\nlog_level = "info"\n# caf\xe9\n')
    assert str(err).startswith(f"{PATH}:3: ")
    assert err.line == 3


@pytest.mark.parametrize("text", ["[control]\nmax_connections = [1,\n", "[control]\nmax_connections"])
def test_syntax_error_at_end_of_document_names_a_line(text: str) -> None:
    err = parse_error(text)
    assert err.line == 2
    assert str(err).startswith(f"{PATH}:2: TOML syntax: ")


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('[control]\nmax_connections = 5\n"bogus" = 1\n', 3, "control.bogus"),
        ("[control]\nmax_connections = 5\n'bogus' = 1\n", 3, "control.bogus"),
        ("[control]\nmax_connections = 5\n[control.extra]\nx = 1\n", 3, "control.extra"),
        ("# x\ncontrol = { max_connections = 5, bogus = 1 }\n", 2, "control.bogus"),
        ("# x\n[bogus.sub]\nx = 1\n", 2, "bogus"),
        ("# x\n[[control]]\nmax_connections = 5\n", 2, "control"),
    ],
)
def test_line_for_other_toml_spellings(text: str, line: int, key: str) -> None:
    err = parse_error(text)
    assert_names(err, line, key)


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("control.max_request_bytes", 64 * MiB + 1, f"must be at most {64 * MiB}, not"),
        ("log.max_datagram_bytes", 16 * MiB + 1, f"must be at most {16 * MiB}, not"),
        ("store.max_bytes", MiB - 1, f"must be at least {MiB}, not"),
        ("log.receive_buffer_bytes", 1024 * MiB + 1, f"must be at most {1024 * MiB}, not"),
    ],
)
def test_range_error_states_the_exact_bound(key: str, value: int, bound: str) -> None:
    section, name = key.split(".")
    err = parse_error(f"[{section}]\n{name} = {value}\n")
    assert_names(err, 2, key)
    assert bound in str(err)


# -- [[forward]] tables ---------------------------------------------------------------------------


GOOD = b"""\
[[forward]]
name = "central"
type = "syslog"
address = "tls://logs.example:6514"
priority = "warning"
ident = ["sshd", "myapp"]
unit = ["myapp.service"]
uid = [0, 1000]
ca_file = "/etc/ssl/ca.pem"

[[forward]]
name = "journal"
type = "journald"
"""


def test_forward_tables_parse() -> None:
    cfg = parse(GOOD, "f.toml")
    assert cfg.forward == [
        ForwardConfig(
            name="central",
            type="syslog",
            address="tls://logs.example:6514",
            priority=4,
            ident=["sshd", "myapp"],
            unit=["myapp.service"],
            uid=[0, 1000],
            ca_file="/etc/ssl/ca.pem",
        ),
        ForwardConfig(name="journal", type="journald", address="unix:///run/systemd/journal/socket"),
    ]


@pytest.mark.parametrize(
    ("second", "line", "key", "why"),
    [
        ('name = "b"\ntype = "syslog"\naddress = "http://x:1"', 8, "forward[2].address", "is not tcp://HOST:PORT"),
        ('name = "b"\ntype = "syslog"\naddress = "tcp://x:70000"', 8, "forward[2].address", "port 70000"),
        ('name = "b"\ntype = "syslog"', 5, "forward[2].address", "missing"),
        ('name = "a"\ntype = "syslog"\naddress = "tcp://x:1"', 6, "forward[2].name", "a second target named 'a'"),
        ('type = "syslog"\naddress = "tcp://x:1"', 5, "forward[2].name", "missing"),
        ('name = "b"\naddress = "tcp://x:1"', 5, "forward[2].type", "missing"),
        ('name = "b"\ntype = "kafka"', 7, "forward[2].type", "must be one of syslog, journald"),
        ('name = "b c"\ntype = "syslog"', 6, "forward[2].name", "must be 1 to 64"),
        ('name = "b"\ntype = "syslog"\naddress = "tcp://x:1"\nca_file = "/ca"', 9, "forward[2].ca_file", "tls://"),
        ('name = "b"\ntype = "journald"\naddress = "tcp://x:1"', 8, "forward[2].address", "unix:///path"),
        ('name = "b"\ntype = "syslog"\npriority = "loud"', 8, "forward[2].priority", "level name"),
        ('name = "b"\ntype = "syslog"\nuid = ["root"]', 8, "forward[2].uid", "uids (numbers)"),
        ('name = "b"\ntype = "syslog"\nmax_message_bytes = 100', 8, "forward[2].max_message_bytes", "at least 2048"),
        ('name = "b"\ntype = "syslog"\nretries = 3', 8, "forward[2].retries", "unknown key"),
    ],
)
def test_forward_errors_name_the_table_line_and_key(second: str, line: int, key: str, why: str) -> None:
    text = f'[[forward]]\nname = "a"\ntype = "journald"\n\n[[forward]]\n{second}\n'
    with pytest.raises(ConfigError) as err:
        parse(text.encode(), "/etc/ipcd/ipcd.toml")
    assert str(err.value).startswith(f"/etc/ipcd/ipcd.toml:{line}: {key}: "), str(err.value)
    assert why in str(err.value)


def test_forward_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"f.toml:2: forward: must be an array of tables: \[\[forward\]\]"):
        parse(b'\n[forward]\nname = "a"\n', "f.toml")


def test_check_config_shows_forward_errors(tmp_path: Path) -> None:
    conf = tmp_path / "ipcd.toml"
    conf.write_text('[[forward]]\nname = "a"\ntype = "syslog"\naddress = "tcp://[::1]:99999"\n')
    res = subprocess.run(
        [str(BIN / "ipcd"), "--config", str(conf), "--check-config"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 78
    assert f"{conf}:4: forward[1].address: port 99999 is not 1-65535" in res.stderr
    conf.write_text(GOOD.decode())
    res = subprocess.run(
        [str(BIN / "ipcd"), "--config", str(conf), "--check-config"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert [t["name"] for t in json.loads(res.stdout)["forward"]] == ["central", "journal"]
