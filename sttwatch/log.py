"""structlog set-up: readable on a TTY, JSON lines otherwise, secrets redacted everywhere.

Set up once per process by ``cli.main`` (structlog's configuration is process-wide by
design); nothing here runs at import time.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def _redactor(secrets: Iterable[str]) -> Any:
    """A processor replacing every secret in every string field, whatever the event says."""
    values = [s for s in secrets if s and len(s) >= 4]

    def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
        if values:
            for key, value in event.items():
                text = value if isinstance(value, str) else None
                if text is None and not isinstance(value, (int, float, bool, type(None))):
                    text = str(value)
                if text is not None and any(s in text for s in values):
                    for s in values:
                        text = text.replace(s, "***")
                    event[key] = text
        return event

    return redact


class _Library(logging.Handler):
    """Libraries' own log records (psycopg's pool, urllib3) as events on our stream, through
    the same writer: a second writer on stderr would land inside a JSON line (structlog
    writes the line and its newline in two calls), and the line would no longer parse."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(record.levelno, "library_log",
                                                  logger=record.name,
                                                  message=record.getMessage())
        except Exception:
            self.handleError(record)


def setup(level: str = "info", fmt: str = "auto", stream: TextIO | None = None,
          secrets: Iterable[str] = ()) -> None:
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=out.isatty()) if console
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Library)]:
        root.removeHandler(old)
    root.addHandler(_Library(logging.WARNING))
