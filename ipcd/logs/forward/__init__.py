"""Forwarding: the log handed on to the pipelines people already run.

One `[[forward]]` table per target (DESIGN.md "Forwarding"): `syslog`
(RFC 5424 over TCP with octet counting, over TLS, or UDP: `rfc5424`,
`links`) or `journald` (the native protocol: `journald`).  The store is the
queue: each target reads committed entries after its cursor (`target`),
and the cursors persist in `forward.db` (`cursors`).  One thread in the
control process serves every target (`engine`).  The daemon calls `start`
once the log process is up, `reload` with each new config and `stop`
before the log process is closed; `status.forward` lists the targets.
"""

from __future__ import annotations

from pathlib import Path

from ipcd.config import Config
from ipcd.control.app import App
from ipcd.logs.forward.cursors import FORWARD_DB_NAME
from ipcd.logs.forward.engine import Engine
from ipcd.logs.process import LogProcess

__all__ = ["Engine", "start", "reload", "stop"]


def start(cfg: Config, state_dir: Path, logs: LogProcess | None, app: App) -> Engine | None:
    if logs is None:
        return None
    engine = Engine(cfg.forward, logs.db_path, str(state_dir / FORWARD_DB_NAME), logs.hub)
    engine.start()
    app.provide(engine)
    app.add_section("forward", engine.status)
    return engine


def reload(engine: Engine | None, cfg: Config) -> None:
    if engine is not None:
        engine.configure(cfg.forward)


def stop(engine: Engine | None) -> None:
    if engine is not None:
        engine.stop()
