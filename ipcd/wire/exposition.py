"""Metrics as Prometheus text (format 0.0.4) or OpenMetrics 1.0 text (sans-IO).

    # HELP ipcd_requests_total Control requests answered, by method.
    # TYPE ipcd_requests_total counter
    ipcd_requests_total{method="ping"} 42

A `Family` is one metric (its name without `_total`, its type, its help
and its samples); `render` writes families in either format.  The two
differ in little: OpenMetrics names a counter family without `_total` in
HELP and TYPE and ends with `# EOF`.  Escaping follows both specifications:
in HELP, `\\` and newline; in a label value, `\\`, `"` and newline.  Values
are integers as they are, floats in Python's shortest round-trip form,
`+Inf`, `-Inf`, `NaN`.  Who measures what is `daemon.metrics`'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    suffix: str  # "", "_total", "_bucket", "_sum", "_count"
    labels: Labels
    value: float


@dataclass
class Family:
    name: str  # without "_total"
    kind: str  # counter, gauge, histogram
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, labels: Labels = ()) -> Family:
        self.samples.append(Sample("_total" if self.kind == "counter" else "", labels, value))
        return self

    def add_histogram(self, buckets: list[tuple[float, int]], total_s: float, labels: Labels = ()) -> Family:
        """Cumulative `buckets` (upper bound, count), the last bound +Inf; `total_s` the sum."""
        for bound, count in buckets:
            self.samples.append(Sample("_bucket", (*labels, ("le", format_value(float(bound)))), count))
        self.samples.append(Sample("_sum", labels, total_s))
        self.samples.append(Sample("_count", labels, buckets[-1][1] if buckets else 0))
        return self


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


def render(families: list[Family], openmetrics: bool = False) -> str:
    lines = []
    for fam in families:
        head = fam.name if openmetrics or fam.kind != "counter" else f"{fam.name}_total"
        lines.append(f"# HELP {head} {escape_help(fam.help)}")
        lines.append(f"# TYPE {head} {fam.kind}")
        for s in fam.samples:
            lines.append(f"{fam.name}{s.suffix}{_labels(s.labels)} {format_value(s.value)}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"
