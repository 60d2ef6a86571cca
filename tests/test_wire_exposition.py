"""`ipcd.wire.exposition`: the metrics text, read back with prometheus_client's parsers."""

from __future__ import annotations

import math

import pytest
from helpers_metrics import samples

from ipcd.wire.exposition import Family, render


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
