"""Metrics text read back with prometheus_client's parsers."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, openmetrics: bool = False) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, sorted labels) -> value."""
    types, values = {}, {}
    for fam in (parse_openmetrics if openmetrics else parse_prometheus)(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, values
