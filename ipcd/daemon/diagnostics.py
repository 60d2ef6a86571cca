"""ipcd's own diagnostics: the `ipcd` logger on stderr.

Under systemd (JOURNAL_STREAM set) each line gets a `<N>` prefix, so that
journald files it at the right priority (sd-daemon(3)); elsewhere a time,
the pid and the level.  The level is `--log-level` if given, else
`[daemon] log_level`, which a reload changes, in the log process too.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("ipcd")


class JournalFormatter(logging.Formatter):
    # sd-daemon(3): a "<N>" prefix gives journald the syslog priority.
    PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{self.PRIORITY.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s ipcd[%(process)d]: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    set_log_level(level)


def set_log_level(level: str) -> None:
    log.setLevel(level.upper())
