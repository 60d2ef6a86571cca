"""Metrics: the exposition text, `ipcctl metrics` and the textfile, read back with prometheus_client's parsers."""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Ipcd, ipcctl, wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from ipcd.wire.exposition import Family, render

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, openmetrics: bool = False) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, sorted labels) -> value."""
    types, values = {}, {}
    for fam in (parse_openmetrics if openmetrics else parse_prometheus)(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, values


@pytest.mark.parametrize("openmetrics", [False, True])
def test_exposition_escapes_what_each_format_says(openmetrics: bool) -> None:
    nasty = 'back\\slash "quoted"\nnew line ]'
    fams = [
        Family("x_events", "counter", "Help with a \\ and a\nnewline.").add(3, (("target", nasty),)),
        Family("x_ratio", "gauge", "Floats.").add(0.25).add(math.inf, (("k", "inf"),)).add(math.nan, (("k", "nan"),)),
        Family("x_latency_seconds", "histogram", "A histogram.").add_histogram(
            [(0.5, 1), (1.0, 3), (math.inf, 4)], 2.5
        ),
    ]
    text = render(fams, openmetrics)
    assert text.endswith("# EOF\n") == openmetrics
    assert ("# TYPE x_events counter" in text) == openmetrics
    assert ("# TYPE x_events_total counter" in text) != openmetrics
    types, values = samples(text, openmetrics)
    assert types == {"x_events": "counter", "x_ratio": "gauge", "x_latency_seconds": "histogram"}
    assert values[("x_events_total", (("target", nasty),))] == 3
    assert values[("x_ratio", ())] == 0.25 and values[("x_ratio", (("k", "inf"),))] == math.inf
    assert math.isnan(values[("x_ratio", (("k", "nan"),))])
    assert values[("x_latency_seconds_bucket", (("le", "+Inf"),))] == 4
    assert values[("x_latency_seconds_bucket", (("le", "0.5"),))] == 1
    assert values[("x_latency_seconds_count", ())] == 4 and values[("x_latency_seconds_sum", ())] == 2.5


EXPECTED_TYPES = {
    "ipcd_build_info": "gauge",
    "ipcd_connections_active": "gauge",
    "ipcd_connections": "counter",
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


def test_histogram_buckets_are_le_and_cumulative() -> None:
    from ipcd.logs.shared import HISTOGRAM_BOUNDS_S, Shared

    sh = Shared()
    for seconds in (0.0, 0.001, 0.0011, 20.0):  # 0.001 sits on a bound: it counts there (le)
        sh.observe("commit_duration", seconds)
    buckets, total_s = sh.histogram("commit_duration")
    counts = dict(buckets)
    assert counts[0.0005] == 1 and counts[0.001] == 2 and counts[0.0025] == 3 and counts[10.0] == 3
    assert counts[math.inf] == 4 and len(buckets) == len(HISTOGRAM_BOUNDS_S) + 1
    assert total_s == pytest.approx(20.0021)
    assert sh.histogram("intake_latency")[0][-1] == (math.inf, 0)  # the histograms do not share slots
