"""What `ipcctl doctor` has found so far: the checks, and what they learnt on the way.

A check is a function of a `Checkup`: it reads what earlier checks found
(the socket `path`, whether the daemon is `reachable`, its status `st`, the
config `cfg`) and `add`s one line.  The checks are in `checks_sockets` and
`checks_service`; `doctor` runs them in order and renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipcd import config


@dataclass
class Check:
    check: str
    status: str  # ok, warning, problem
    message: str
    fix: str | None = None


@dataclass
class Checkup:
    socket_opt: str | None
    user: bool
    timeout_s: float
    checks: list[Check] = field(default_factory=list)
    path: str | None = None
    reachable: bool = False
    st: dict[str, Any] | None = None
    cfg: config.Config = field(default_factory=config.Config)

    def add(self, name: str, status: str, message: str, fix: str | None = None) -> None:
        self.checks.append(Check(name, status, message, fix))
