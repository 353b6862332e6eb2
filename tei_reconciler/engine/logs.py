"""Logs as TEI writes them: to stdout, plain text or flat JSON lines with `--json-output`.

Supervisors (the reconciler among them) wait for the "Ready" line and parse JSON lines, so the
keys are TEI's: timestamp, level, message, target, filename, line_number.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys

LOGGER = logging.getLogger("tei_reconciler.engine")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "timestamp": _timestamp(record),
                "level": record.levelname.replace("WARNING", "WARN"),
                "message": record.getMessage(),
                "target": record.name.replace(".", "::"),
                "filename": record.pathname,
                "line_number": record.lineno,
            },
            separators=(",", ":"),
        )


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.replace("WARNING", "WARN")
        target = record.name.replace(".", "::")
        return f"{_timestamp(record)} {level:>5} {target}: {record.getMessage()}"


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def setup_logging(*, json_output: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter() if json_output else _TextFormatter())
    level = os.environ.get("LOG_LEVEL", "info").split(",")[0].upper()
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    LOGGER.propagate = False
