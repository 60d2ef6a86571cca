"""Forwarding as ipcctl shows it: the `status` lines, and `doctor`'s check of each target.

`render_forward` is `status.forward` for people: one line per target (state,
cursor, lag, sent, errors, the last error).  `check_forward` is doctor's:
it reports what the daemon says of each target and, for a target the
daemon cannot reach, tries it from here too (TCP connect, TLS handshake
with the target's `ca_file` and name), which tells a receiver that is down
from a unit that has no network.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from ipcd.ctl.escape import escape

if TYPE_CHECKING:
    from ipcd.config import ForwardConfig
    from ipcd.ctl.checkup import Checkup

NETWORK_FIX = (
    "ipcd.service has no network (PrivateNetwork=yes): install contrib/systemd/forward-network.conf "
    "as /etc/systemd/system/ipcd.service.d/forward-network.conf, then `systemctl daemon-reload` and restart ipcd"
)


def render_forward(targets: list[dict[str, Any]]) -> str:
    if not targets:
        return "  forward   none ([[forward]] in the config)"
    width = max(len(t["name"]) for t in targets)
    lines = []
    for n, t in enumerate(targets):
        label = "  forward   " if n == 0 else " " * 12
        line = (
            f"{label}{t['name']:<{width}}  {t['type']} {t['address']}: {t['state'].replace('_', ' ')}, "
            f"cursor {t['cursor']}, lag {t['lag']}, {t['sent']} sent, {t['errors']} errors"
        )
        if t.get("missed"):
            line += f", {t['missed']} missed (retention)"
        if t.get("last_error") and t["state"] != "connected":
            line += f"\n{' ' * (14 + width)}last error: {escape(str(t['last_error']))}"
        lines.append(line)
    return "\n".join(lines)


def probe(cfg: ForwardConfig, timeout_s: float) -> tuple[bool, str]:
    """Can this machine reach `cfg`'s receiver (TCP connect, TLS handshake)?  (ok, what happened)."""
    import socket  # here: `ipcctl status` renders this module's lines and never probes
    import ssl

    from ipcd.config import split_address

    scheme, host, port = split_address(cfg.address)
    if scheme == "udp":
        return True, "UDP: nothing answers to check"
    if scheme == "unix":
        try:
            if not stat.S_ISSOCK(os.stat(host).st_mode):
                return False, f"{host} is not a socket"
        except OSError as e:
            return False, f"{host}: {e.strerror}"
        return True, f"{host} is there"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if scheme != "tls":
                return True, "TCP connect ok"
            ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
            with ctx.wrap_socket(sock, server_hostname=cfg.server_name or host) as tls:
                return True, f"TLS handshake ok ({tls.version()})"
    except ssl.SSLCertVerificationError as e:
        return False, f"TLS: certificate verify failed: {e.verify_message}"
    except (OSError, ValueError) as e:
        return False, getattr(e, "strerror", None) or str(e)


def check_forward(d: Checkup) -> None:
    configured = {t.name: t for t in d.cfg.forward}
    reported = {t["name"]: t for t in (d.st or {}).get("forward") or []}
    for name in sorted(configured.keys() | reported.keys()):
        cfg, st = configured.get(name), reported.get(name)
        check = f"forward {name}"
        if st is None and d.st is not None and cfg is not None:
            d.add(check, "warning", "in the config, not in the running ipcd", "`ipcctl reload`")
            continue
        if st is not None and st["state"] == "connected":
            d.add(check, "ok", f"{st['address']}: connected, lag {st['lag']} entries")
            continue
        if st is not None and not st["errors"]:
            d.add(
                check, "warning", f"{st['address']}: {st['state'].replace('_', ' ')} (no error yet)", "run doctor again"
            )
            continue
        here = probe(cfg, d.timeout_s) if cfg is not None else None
        if st is None:  # ipcd is not running: only this machine's view
            assert here is not None
            d.add(check, "ok" if here[0] else "problem", f"{cfg.address if cfg else name}: {here[1]} (from here)")
            continue
        why = f"{st['address']}: {st['state'].replace('_', ' ')}, {st['errors']} errors, last: {st['last_error']}"
        if here is not None and here[0] and cfg is not None and not cfg.address.startswith(("udp:", "unix:")):
            d.add(check, "problem", f"{why}; but reachable from here ({here[1]})", NETWORK_FIX)
        elif here is not None:
            d.add(check, "problem", f"{why}; from here too: {here[1]}", "start the receiver or correct the address")
        else:
            d.add(check, "problem", why)
