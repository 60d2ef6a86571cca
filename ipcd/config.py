"""ipcd's settings: the `Config` dataclasses and the TOML file.

The directory rules and the names (socket files, units) that the daemon,
the client and ipcctl share are `dirs`' and are named here too.
Everything here is pure: the environment and the uid are passed in, the
file is read once.  DESIGN.md "Config" fixes the keys.  A key the file does not
know, or a value of the wrong type or out of range, is a `ConfigError`
naming the file, the line and the key.  The file as text (TOML errors with
their line, each kind of value checked, the line a key is on) is
`configfile`'s; who reads the values (servers, the store, access) is not
this module's business.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ipcd.configfile import check, forward_line, line_of, read_toml
from ipcd.configfile import parse_mode as parse_mode  # a public name of this module
from ipcd.dirs import CONTROL_SOCKET_NAME as CONTROL_SOCKET_NAME
from ipcd.dirs import LOG_SOCKET_NAME as LOG_SOCKET_NAME
from ipcd.dirs import PROTECT_HOME_DIRS as PROTECT_HOME_DIRS
from ipcd.dirs import SYSTEM_RUNTIME_DIR as SYSTEM_RUNTIME_DIR
from ipcd.dirs import UNIT_NAMES as UNIT_NAMES
from ipcd.dirs import config_path as config_path
from ipcd.dirs import runtime_dir as runtime_dir
from ipcd.dirs import state_dir as state_dir
from ipcd.errors import ConfigError

MiB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
DURABILITY = ("normal", "fsync")
FORWARD_TYPES = ("syslog", "journald")
FORWARD_REQUIRED = ("name", "type")  # the keys a [[forward]] table must have
JOURNAL_SOCKET = "/run/systemd/journal/socket"  # systemd-journald.socket, sd_journal_sendv(3)
_ADDRESS = re.compile(
    r"(?P<scheme>tcp|tls|udp)://(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})"
)


def _opt(
    default: Any,
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    doc: str = "",
    choices: tuple[str, ...] | None = None,
) -> Any:
    meta = {"kind": kind, "min": lo, "max": hi, "doc": doc, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DaemonConfig:
    log_level: str = _opt("info", "level", doc="ipcd's own diagnostics on stderr", choices=LOG_LEVELS)
    status_interval_s: float = _opt(5.0, "float", 0.1, 3600, "how often STATUS= is refreshed")
    control_nice: int = _opt(
        10, "int", 0, 19, "the control process's nice over the log process's, while intake is busy"
    )
    malloc_arenas: int = _opt(2, "int", 0, 1024, "glibc malloc arenas, for all threads together; 0: glibc's default")


@dataclass
class ControlConfig:
    max_connections: int = _opt(256, "int", 1, 65536)
    max_connections_per_uid: int = _opt(64, "int", 1, 65536, "not applied to admins")
    admin_reserved_connections: int = _opt(8, "int", 0, 65536, "beyond max_connections, for admins only")
    max_request_bytes: int = _opt(MiB, "int", 64, 64 * MiB)
    max_batch: int = _opt(100, "int", 1, 100_000, "calls in one JSON-RPC batch")
    idle_timeout_s: float = _opt(300.0, "float", 0.05, 86400)
    stream_queue: int = _opt(1024, "int", 1, 1_000_000, "notifications held for a slow reader")
    max_queued_bytes_per_connection: int = _opt(8 * MiB, "int", 64 * 1024, 1024 * MiB, "replies and notifications")
    max_queued_bytes: int = _opt(
        128 * MiB, "int", MiB, 64 * 1024 * MiB, "the same, all connections together; a non-admin uid may hold half"
    )
    max_inflight_request_bytes: int = _opt(
        4 * MiB, "int", 64 * 1024, 1024 * MiB, "requests over 4 KiB handled at once, in bytes; a non-admin uid: half"
    )
    max_streams_per_connection: int = _opt(256, "int", 1, 65536, "logs.follow, kv.watch, and each channel subscribed")
    query_timeout_s: float = _opt(5.0, "float", 0.01, 3600, "a logs.query that runs longer is stopped")
    socket_mode: int = _opt(0o660, "mode")
    socket_group: str = _opt("ipcd", "str")


@dataclass
class LogConfig:
    max_datagram_bytes: int = _opt(65536, "int", 64, 16 * MiB)
    rate_limit_burst: int = _opt(10000, "int", 0, 10**9, "0 turns rate limiting off")
    rate_limit_interval_s: float = _opt(30.0, "float", 0.001, 86400)
    receive_buffer_bytes: int = _opt(8 * MiB, "int", 4096, 1024 * MiB)
    socket_mode: int = _opt(0o666, "mode")
    follow_max_lag: int = _opt(100_000, "int", 1, 10**9, "entries a log follower may fall behind")
    max_senders: int = _opt(16384, "int", 16, 10**7, "rate-limit windows kept; past it a uid's new senders share one")


@dataclass
class StoreConfig:
    max_entries: int = _opt(1_000_000, "int", 1, 10**12)
    max_bytes: int = _opt(1024 * MiB, "int", MiB, 2**50)
    max_age_s: float = _opt(0.0, "float", 0, 10**10, "0: no age limit")
    commit_interval_ms: int = _opt(50, "int", 1, 60_000)
    commit_batch: int = _opt(10000, "int", 1, 10**7)
    retention_interval_s: float = _opt(10.0, "float", 0.01, 86400)
    max_pending: int = _opt(100_000, "int", 1, 10**8, "entries held while the store cannot be written")
    max_pending_bytes: int = _opt(64 * MiB, "int", MiB, 2**40, "the same, in bytes (about)")


@dataclass
class KvConfig:
    max_value_bytes: int = _opt(MiB, "int", 1, 64 * MiB)
    max_keys: int = _opt(100_000, "int", 1, 10**8)
    max_bytes: int = _opt(64 * MiB, "int", 1, 2**40, "all values together")
    durability: str = _opt(
        "normal", "durability", doc='"normal": survives kill -9; "fsync": power loss too', choices=DURABILITY
    )


@dataclass
class AccessConfig:
    admin_uids: list[int | str] = _opt([], "ids")
    admin_groups: list[int | str] = _opt([], "ids")
    write_uids: list[int | str] = _opt([], "ids")
    write_groups: list[int | str] = _opt([], "ids")


@dataclass
class MetricsConfig:
    textfile: str = _opt("", "path", doc="write metrics here for node_exporter's textfile collector; empty: off")
    interval_s: float = _opt(15.0, "float", 1, 86400, "how often the textfile is rewritten")


@dataclass
class ForwardConfig:
    """One `[[forward]]` table: a target the log is forwarded to (DESIGN.md "Forwarding")."""

    name: str = _opt(
        "",
        "target",
        doc="unique, 1 to 64 of A-Z a-z 0-9 _ . - (a letter or digit first); "
        "names the target in status, metrics and forward.db",
    )
    type: str = _opt("", "forward_type", doc="RFC 5424 syslog, or journald's native protocol", choices=FORWARD_TYPES)
    address: str = _opt(
        "",
        "str",
        doc="syslog: tcp://, tls:// or udp://HOST:PORT, required; "
        f"journald: unix:///path, default unix://{JOURNAL_SOCKET}",
    )
    priority: int | None = _opt(
        None, "severity", doc="a level name (emerg to debug) or 0 to 7: that level and more severe; unset: any level"
    )
    ident: list[str] = _opt([], "strs", doc="the sender's ident is one of these; empty: any")
    unit: list[str] = _opt([], "strs", doc="the sender's systemd unit is one of these; empty: any")
    uid: list[int] = _opt([], "uids", doc="the sender's trusted uid is one of these; empty: any")
    ca_file: str = _opt("", "path", doc="tls:// only: CA certificates (default: the system's)")
    server_name: str = _opt("", "str", doc="tls:// only: the name the certificate must carry (default: HOST)")
    max_message_bytes: int = _opt(
        8192, "int", 2048, 16 * MiB, "syslog: longer messages are cut (RFC 5425: 2048 to 8192)"
    )
    batch: int = _opt(500, "int", 1, 10000, "entries read from the store at a time")
    ack_window_s: float = _opt(2.0, "float", 0, 3600, "the at-least-once window (README)")
    timeout_s: float = _opt(10.0, "float", 0.1, 600, "connect, TLS handshake, unacknowledged data")
    backoff_max_s: float = _opt(60.0, "float", 0.1, 86400, "the longest wait between attempts")


SECTIONS: dict[str, type] = {
    "daemon": DaemonConfig,
    "control": ControlConfig,
    "log": LogConfig,
    "store": StoreConfig,
    "kv": KvConfig,
    "access": AccessConfig,
    "metrics": MetricsConfig,
}


@dataclass
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    kv: KvConfig = field(default_factory=KvConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    forward: list[ForwardConfig] = field(default_factory=list)
    path: str | None = None  # the file it came from, if any
    explicit: frozenset[str] = frozenset()  # "section.key" set by the file


# -- the TOML file ----------------------------------------------------------


def load(path: Path | None, named: bool = False) -> Config:
    """Read `path`; a missing default file means defaults."""
    if path is None:
        return Config()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if named:
            raise ConfigError("no such file", str(path)) from None
        return Config()
    except OSError as e:
        raise ConfigError(e.strerror or str(e), str(path)) from None
    return parse(raw, str(path))


def parse(raw: bytes, path: str = "<config>") -> Config:
    doc, text = read_toml(raw, path)
    cfg = Config(path=path)
    explicit: set[str] = set()
    for name, value in doc.items():
        if name == "forward":
            cfg.forward = _forwards(value, text, path)
            continue
        cls = SECTIONS.get(name)
        if cls is None:
            known = ", ".join([*(f"[{s}]" for s in SECTIONS), "[[forward]]"])
            raise ConfigError(f"unknown section (known: {known})", path, line_of(text, None, name), name)
        if not isinstance(value, dict):
            raise ConfigError("must be a table", path, line_of(text, None, name), name)
        setattr(cfg, name, _section(cls, name, value, text, path))
        explicit.update(f"{name}.{k}" for k in value)
    cfg.explicit = frozenset(explicit)
    return cfg


def _section(
    cls: type,
    name: str,
    values: dict[str, Any],
    text: str,
    path: str,
    key_line: Callable[[str], int | None] | None = None,
) -> Any:
    specs = {f.name: f for f in fields(cls)}
    out = cls()
    where = key_line or (lambda key: line_of(text, name, key))
    for key, value in values.items():
        dotted = f"{name}.{key}"
        f = specs.get(key)
        if f is None:
            known = ", ".join(specs)
            raise ConfigError(f"unknown key (known: {known})", path, where(key), dotted)
        try:
            setattr(out, key, check(value, f.metadata))
        except ValueError as e:
            raise ConfigError(str(e), path, where(key), dotted) from None
    return out


# -- [[forward]] -------------------------------------------------------------------


def _forwards(value: Any, text: str, path: str) -> list[ForwardConfig]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError("must be an array of tables: [[forward]]", path, line_of(text, None, "forward"), "forward")
    out: list[ForwardConfig] = []
    seen: dict[str, int] = {}
    for n, table in enumerate(value, 1):
        key = f"forward[{n}]"
        target = _section(ForwardConfig, key, table, text, path, functools.partial(forward_line, text, n))
        for required in FORWARD_REQUIRED:
            if not getattr(target, required):
                raise ConfigError("missing (required)", path, forward_line(text, n, None), f"{key}.{required}")
        try:
            target.address = forward_address(target)
        except ValueError as e:
            raise ConfigError(str(e), path, forward_line(text, n, "address"), f"{key}.address") from None
        tls = target.address.startswith("tls://")
        for tls_key in ("ca_file", "server_name"):
            if getattr(target, tls_key) and not tls:
                raise ConfigError("only for a tls:// address", path, forward_line(text, n, tls_key), f"{key}.{tls_key}")
        if target.name in seen:
            why = f"a second target named {target.name!r} (the first is forward[{seen[target.name]}])"
            raise ConfigError(why, path, forward_line(text, n, "name"), f"{key}.name")
        seen[target.name] = n
        out.append(target)
    return out


def forward_address(target: ForwardConfig) -> str:
    """The target's address, checked; journald's default filled in."""
    address = target.address
    if target.type == "journald":
        if not address:
            return f"unix://{JOURNAL_SOCKET}"
        if not address.startswith("unix:///"):
            raise ValueError("journald takes unix:///path (default unix:///run/systemd/journal/socket)")
        return address
    if not address:
        raise ValueError("missing: tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT")
    m = _ADDRESS.fullmatch(address)
    if m is None:
        raise ValueError(f"{address!r} is not tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT ([::1] for IPv6)")
    if not 1 <= int(m.group("port")) <= 65535:
        raise ValueError(f"port {m.group('port')} is not 1-65535")
    return address


def split_address(address: str) -> tuple[str, str, int]:
    """`tcp://host:514` -> ("tcp", "host", 514); `unix:///p` -> ("unix", "/p", 0)."""
    if address.startswith("unix://"):
        return "unix", address[len("unix://") :], 0
    m = _ADDRESS.fullmatch(address)
    if m is None:
        raise ValueError(f"not an address: {address!r}")
    return m.group("scheme"), m.group("ip6") or m.group("host"), int(m.group("port"))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The effective settings, as `ipcd --check-config` shows them."""
    out: dict[str, Any] = {}
    for name in SECTIONS:
        sec = getattr(cfg, name)
        out[name] = {
            f.name: (f"{getattr(sec, f.name):04o}" if f.metadata["kind"] == "mode" else getattr(sec, f.name))
            for f in fields(sec)
        }
    out["forward"] = [{f.name: getattr(t, f.name) for f in fields(t)} for t in cfg.forward]
    return out
