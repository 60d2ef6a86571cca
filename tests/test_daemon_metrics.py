"""`ipcd.daemon.metrics`: `ipcctl metrics` and the textfile from a real ipcd, read back with prometheus_client's
parsers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from conftest import Ipcd, ipcctl, wait_for
from helpers_metrics import samples

EXPECTED_TYPES = {
    "ipcd_build_info": "gauge",
    "ipcd_connections_active": "gauge",
    "ipcd_connections": "counter",
    "ipcd_queued_bytes": "gauge",
    "ipcd_queue_refused": "counter",
    "ipcd_large_requests_waited": "counter",
    "ipcd_requests": "counter",
    "ipcd_request_errors": "counter",
    "ipcd_log_received": "counter",
    "ipcd_log_stored": "counter",
    "ipcd_log_rate_limited": "counter",
    "ipcd_log_truncated": "counter",
    "ipcd_log_malformed": "counter",
    "ipcd_log_dropped": "counter",
    "ipcd_store_bytes": "gauge",
    "ipcd_store_entries": "gauge",
    "ipcd_log_intake_latency_seconds": "histogram",
    "ipcd_log_commit_duration_seconds": "histogram",
    "ipcd_forward_lag_entries": "gauge",
    "ipcd_forward_sent": "counter",
    "ipcd_forward_errors": "counter",
    "ipcd_watchdog_enabled": "gauge",
    "ipcd_kv_keys": "gauge",
    "ipcd_kv_bytes": "gauge",
    "ipcd_channel_subscribers": "gauge",
}


def test_ipcctl_metrics_parses_and_counters_move(make_ipcd: Callable[..., Ipcd]) -> None:
    config = '[[forward]]\nname = "down"\ntype = "syslog"\naddress = "udp://127.0.0.1:9"\n'
    d = make_ipcd(config).start()
    out = ipcctl("--socket", d.sock, "metrics")
    assert out.returncode == 0, out.stderr
    types, before = samples(out.stdout)
    assert types.items() >= EXPECTED_TYPES.items()
    assert all(name.startswith("ipcd_") for name in types)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for i in range(5):
            s.sendto(f"<13>tag: {i}".encode(), d.log_sock)
        s.sendto(b"", d.log_sock)  # counted received and malformed
    wait_for(lambda: d.call("status")["logs"]["stored"] == 5, 10, "5 stored")
    d.call("kv.set", {"key": "k", "value": "abc"})
    d.call("no.such.method")
    wait_for(lambda: d.call("status")["forward"][0]["sent"] >= 5, 10, "the UDP target to send")
    types, after = samples(ipcctl("--socket", d.sock, "metrics").stdout)
    assert after[("ipcd_log_received_total", ())] == before[("ipcd_log_received_total", ())] + 6
    assert after[("ipcd_log_malformed_total", ())] == before[("ipcd_log_malformed_total", ())] + 1
    assert after[("ipcd_log_stored_total", ())] == 5 and after[("ipcd_store_entries", ())] == 5
    assert after[("ipcd_log_intake_latency_seconds_count", ())] >= 1
    assert after[("ipcd_log_commit_duration_seconds_bucket", (("le", "+Inf"),))] >= 1
    assert after[("ipcd_requests_total", (("method", "kv.set"),))] == 1
    assert after[("ipcd_requests_total", (("method", "(unknown)"),))] == 1
    assert after[("ipcd_request_errors_total", (("method", "(unknown)"),))] == 1
    assert after[("ipcd_requests_total", (("method", "metrics"),))] >= 1
    assert after[("ipcd_kv_keys", ())] == 1 and after[("ipcd_kv_bytes", ())] == 5
    target = (("target", "down"), ("type", "syslog"))
    assert after[("ipcd_forward_sent_total", target)] >= 5 and ("ipcd_forward_lag_entries", target) in after
    om = ipcctl("--socket", d.sock, "metrics", "--openmetrics")
    assert om.stdout.endswith("# EOF\n")
    om_types, _ = samples(om.stdout, openmetrics=True)
    assert om_types.items() >= EXPECTED_TYPES.items()


def test_metrics_params_are_checked(ipcd: Ipcd) -> None:
    err = ipcd.call("metrics", {"format": "xml"})
    assert err["code"] == -32602 and "prometheus, openmetrics" in err["message"]


def test_textfile_is_written_atomically_and_follows_reloads(make_ipcd: Callable[..., Ipcd], short_tmp: Path) -> None:
    prom = short_tmp / "textfile" / "ipcd.prom"
    prom.parent.mkdir()
    missing = short_tmp / "nowhere" / "ipcd.prom"
    d = make_ipcd(f'[metrics]\ntextfile = "{missing}"\ninterval_s = 1\n').start()
    wait_for(lambda: "cannot write the metrics textfile" in d.stderr(), 10, "the error to be logged")
    d.config.write_text(f'[metrics]\ntextfile = "{prom}"\ninterval_s = 1\n')
    d.call("reload")
    wait_for(prom.exists, 10, "the textfile")
    assert prom.stat().st_mode & 0o777 == 0o644
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>tag: one", d.log_sock)

    def stored_in_file() -> float:
        _, values = samples(prom.read_text())
        return values[("ipcd_log_stored_total", ())]

    wait_for(lambda: stored_in_file() == 1, 10, "the textfile to be rewritten")
    assert sorted(p.name for p in prom.parent.iterdir()) == ["ipcd.prom"]  # no temporary file left
    assert d.stderr().count("cannot write the metrics textfile") == 1  # said once, not every interval
