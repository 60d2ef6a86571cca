"""Metrics: what `status` says, as Prometheus or OpenMetrics text.

The `metrics` method (role read; `ipcctl metrics`) answers the exposition
text, and with `[metrics] textfile = PATH` a thread writes the same text
every `interval_s`, atomically (a temporary file in the same directory,
then rename(2)), for node_exporter's textfile collector: the usual way for
a daemon without an HTTP port, which the hardened unit rules out.  Every
value is read from the subsystems' status sections, the per-method
counters (`ControlServer.requests_by_method`) and the log process's histograms in shared memory
(`logs.shared`); a subsystem that is absent has no metrics, never zeros.
The text format is `wire.exposition`'s.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from ipcd.config import Config, MetricsConfig
from ipcd.control.app import App, Call
from ipcd.control.registry import Param, Registry
from ipcd.control.server import ControlServer
from ipcd.logs.process import LogProcess
from ipcd.wire.exposition import OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, Family, render

log = logging.getLogger("ipcd")

METHODS = Registry()
FORMATS = ("prometheus", "openmetrics")


def _format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"must be one of {', '.join(FORMATS)}")
    return value


class Metrics:
    def __init__(self, app: App, logs: LogProcess | None, cfg: MetricsConfig) -> None:
        self.app = app
        self.logs = logs
        self.cfg = cfg
        self.writes = 0
        self._error: str | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ipcd-metrics", daemon=True)

    def families(self) -> list[Family]:
        st = self.app.status()
        out: list[Family] = []
        for collect in COLLECTORS:
            out.extend(collect(self, st))
        return out

    def text(self, openmetrics: bool = False) -> str:
        return render(self.families(), openmetrics)

    # -- the textfile ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def configure(self, cfg: MetricsConfig) -> None:
        self.cfg = cfg
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            if self.cfg.textfile:
                self.write_textfile(self.cfg.textfile)
            self._wake.wait(self.cfg.interval_s)
            self._wake.clear()

    def write_textfile(self, path: str) -> None:
        """The text, atomically: node_exporter never reads half a file."""
        folder = os.path.dirname(path) or "."
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ipcd-metrics.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self.text())
                    os.fchmod(f.fileno(), 0o644)  # node_exporter runs as another user
                os.rename(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            why = f"cannot write the metrics textfile {path}: {e.strerror or e}"
            if why != self._error:
                log.error("%s; trying again every %g s", why, self.cfg.interval_s)
            self._error = why
            return
        if self._error is not None:
            log.info("the metrics textfile %s is written again", path)
            self._error = None
        self.writes += 1

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def start(app: App, logs: LogProcess | None, cfg: Config) -> Metrics:
    m = Metrics(app, logs, cfg.metrics)
    app.provide(m)
    m.start()
    return m


def reload(m: Metrics | None, cfg: Config) -> None:
    if m is not None:
        m.configure(cfg.metrics)


def stop(m: Metrics | None) -> None:
    if m is not None:
        m.stop()


@METHODS.method(
    "metrics",
    role="read",
    doc="Counters, gauges and histograms as Prometheus text (or OpenMetrics), for scrapers.",
    params=(Param("format", "string", default="prometheus", check=_format, doc="prometheus or openmetrics"),),
)
def metrics(call: Call, format: str) -> dict[str, Any]:
    om = format == "openmetrics"
    text = call.app.get(Metrics).text(om)
    return {"text": text, "content_type": OPENMETRICS_CONTENT_TYPE if om else PROMETHEUS_CONTENT_TYPE}


# -- what is measured ------------------------------------------------------------------------

UNKNOWN_METHOD = "(unknown)"
Collector = Callable[[Metrics, dict[str, Any]], list[Family]]


def _one(name: str, kind: str, help: str, value: Any) -> Family:
    return Family(name, kind, help).add(value or 0)


def _daemon(m: Metrics, st: dict[str, Any]) -> list[Family]:
    conns = st["connections"]
    by_method = m.app.get(ControlServer).requests_by_method()  # only the names of methods ipcd has
    calls = {name: c for name, (c, _) in by_method.items()}
    errors = {name: e for name, (_, e) in by_method.items()}
    # Calls that named no method (or no valid request) are the requests no method counted.
    calls[UNKNOWN_METHOD] = max(0, st["requests"]["total"] - sum(calls.values()))
    errors[UNKNOWN_METHOD] = max(0, st["requests"]["errors"] - sum(errors.values()))
    req = Family("ipcd_requests", "counter", "Control requests, by method (requests naming no method: (unknown)).")
    err = Family("ipcd_request_errors", "counter", "Control requests answered with an error, by method.")
    for name in sorted(calls):
        req.add(calls[name], (("method", name),))
        err.add(errors.get(name, 0), (("method", name),))
    return [
        Family("ipcd_build_info", "gauge", "ipcd's version.").add(1, (("version", str(st["version"])),)),
        _one("ipcd_uptime_seconds", "gauge", "Seconds since ipcd started.", st["uptime_s"]),
        _one("ipcd_connections_active", "gauge", "Control connections open now.", conns["active"]),
        _one("ipcd_connections_max", "gauge", "[control] max_connections.", conns.get("max")),
        _one("ipcd_connections", "counter", "Control connections accepted.", conns["total"]),
        _one("ipcd_connections_refused", "counter", "Control connections refused at a limit.", conns.get("refused")),
        _one(
            "ipcd_queued_bytes",
            "gauge",
            "Bytes held for control readers (max_queued_bytes).",
            conns.get("queued_bytes"),
        ),
        _one(
            "ipcd_queue_refused",
            "counter",
            "Replies, notifications and request lines refused at max_queued_bytes (a uid's half or the total).",
            conns.get("queue_refused"),
        ),
        _one(
            "ipcd_large_requests_waited",
            "counter",
            "Request lines over 4 KiB that waited for max_inflight_request_bytes.",
            conns.get("large_requests_waited"),
        ),
        req,
        err,
    ]


LOG_COUNTERS = {
    "received": "Datagrams read from the log socket, rate-limited ones included.",
    "stored": "Log entries committed to the store.",
    "rate_limited": "Datagrams dropped by the per-sender rate limit.",
    "truncated": "Datagrams longer than max_datagram_bytes, stored cut.",
    "malformed": "Datagrams with a bad PRI or empty.",
    "dropped": "Entries dropped while the store could not be written.",
    "senders_shared": "Senders put in their uid's rate-limit window: the windows were at max_senders.",
}


def _logs(m: Metrics, st: dict[str, Any]) -> list[Family]:
    out: list[Family] = []
    lg = st.get("logs")
    if lg is not None:
        out += [_one(f"ipcd_log_{k}", "counter", h, lg.get(k)) for k, h in LOG_COUNTERS.items()]
        out.append(_one("ipcd_log_pending", "gauge", "Entries read and not committed yet.", lg.get("pending")))
        out.append(
            _one(
                "ipcd_log_senders", "gauge", "Rate-limit windows kept (max_senders, then one a uid).", lg.get("senders")
            )
        )
    sto = st.get("store")
    if sto is not None:
        out += [
            _one("ipcd_store_bytes", "gauge", "The store's size on disk (database, WAL, shared memory).", sto["bytes"]),
            _one("ipcd_store_entries", "gauge", "Log entries in the store.", sto["entries"]),
            _one("ipcd_store_commits", "counter", "Commits of the log store.", sto.get("commits")),
            _one("ipcd_store_deleted", "counter", "Entries removed by retention.", sto.get("deleted")),
            _one("ipcd_store_writer_ok", "gauge", "1 while the store can be written.", int(sto.get("writer") == "ok")),
        ]
    if m.logs is not None:
        for name, help in (
            ("intake_latency", "Per commit: how long its oldest entry waited from being read to being committed."),
            ("commit_duration", "Per commit: the time to insert and commit."),
        ):
            buckets, total_s = m.logs.shared.histogram(name)
            out.append(Family(f"ipcd_log_{name}_seconds", "histogram", help).add_histogram(buckets, total_s))
    proc = st.get("log_process")
    if proc is not None:
        out.append(_one("ipcd_log_process_up", "gauge", "1 while the log process is alive.", int(bool(proc["alive"]))))
    return out


def _forward(m: Metrics, st: dict[str, Any]) -> list[Family]:
    targets = st.get("forward")
    if targets is None:
        return []
    fams = {
        "lag": Family("ipcd_forward_lag_entries", "gauge", "Entries committed after the target's cursor."),
        "cursor": Family("ipcd_forward_cursor", "gauge", "The last entry id the target has delivered."),
        "connected": Family("ipcd_forward_connected", "gauge", "1 while the target is connected."),
        "sent": Family("ipcd_forward_sent", "counter", "Entries written to the target (resent ones too)."),
        "errors": Family("ipcd_forward_errors", "counter", "Failed connections and sends."),
        "missed": Family("ipcd_forward_missed", "counter", "Entries removed by retention before they were forwarded."),
        "cut": Family(
            "ipcd_forward_cut", "counter", "Messages sent cut at max_message_bytes (MSG or structured data)."
        ),
    }
    for t in targets:
        labels = (("target", t["name"]), ("type", t["type"]))
        for key, fam in fams.items():
            fam.add(int(t["state"] == "connected") if key == "connected" else t[key], labels)
    return list(fams.values())


def _state(m: Metrics, st: dict[str, Any]) -> list[Family]:
    out: list[Family] = []
    wd = st.get("watchdog")
    if wd is not None:
        out.append(_one("ipcd_watchdog_enabled", "gauge", "1 if systemd's watchdog is on.", int(bool(wd["enabled"]))))
        if wd["enabled"]:
            out.append(_one("ipcd_watchdog_healthy", "gauge", "1 while every part is healthy.", int(wd["healthy"])))
            out.append(_one("ipcd_watchdog_pings", "counter", "WATCHDOG=1 sent to systemd.", wd.get("pings")))
    kv = st.get("kv")
    if kv is not None:
        out += [
            _one("ipcd_kv_keys", "gauge", "Keys in the key/value store.", kv["keys"]),
            _one("ipcd_kv_bytes", "gauge", "Bytes of all values together.", kv.get("bytes")),
            _one("ipcd_kv_watchers", "gauge", "Open kv.watch streams.", kv.get("watchers")),
            _one("ipcd_kv_sets", "counter", "kv.set calls that wrote.", kv.get("sets")),
            _one("ipcd_kv_deletes", "counter", "kv.delete calls that deleted.", kv.get("deletes")),
            _one("ipcd_kv_expired", "counter", "Keys gone by their TTL.", kv.get("expired")),
        ]
    ch = st.get("channels")
    if ch is not None:
        out += [
            _one("ipcd_channels", "gauge", "Channels with at least one subscriber.", ch["channels"]),
            _one("ipcd_channel_subscribers", "gauge", "Connections subscribed to a channel.", ch["subscribers"]),
            _one("ipcd_channel_published", "counter", "Messages published.", ch.get("published")),
            _one("ipcd_channel_delivered", "counter", "Messages queued for a subscriber.", ch.get("delivered")),
            _one("ipcd_channel_lagged", "counter", "Messages a slow subscriber missed.", ch.get("lagged")),
        ]
    return out


COLLECTORS: list[Collector] = [_daemon, _logs, _forward, _state]
