"""`ipcctl metrics`: the daemon's metrics as Prometheus or OpenMetrics text.

The text is the `metrics` method's, printed as it came (`--json`: the
method's answer, with its content type), so `ipcctl metrics >
/var/lib/node_exporter/ipcd.prom` or a cron job works where
`[metrics] textfile` is not set.
"""

from __future__ import annotations

import click

from ipcd.ctl.common import Opts, emit_json, pass_opts


@click.command()
@click.option("--openmetrics", is_flag=True, help="OpenMetrics 1.0 text instead of Prometheus 0.0.4.")
@pass_opts
def metrics(opts: Opts, openmetrics: bool) -> None:
    """Print the daemon's metrics (Prometheus text exposition)."""
    result = opts.call("metrics", {"format": "openmetrics" if openmetrics else "prometheus"})
    if opts.json:
        emit_json(result)
    else:
        click.echo(result["text"], nl=False)
