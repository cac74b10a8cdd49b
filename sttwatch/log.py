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


class _Libraries(logging.Handler):
    """Libraries' own messages (watchdog's "Cannot take a snapshot of ...", urllib3's
    retries) as structured events like ours, never bare text lines among them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger("sttwatch.library").log(
                record.levelno, "library_message", logger=record.name,
                message=record.getMessage(),
                **({"error": logging.Formatter().formatException(record.exc_info)}
                   if record.exc_info else {}))
        except Exception:  # a log line must never take the caller down
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
    for old in [h for h in root.handlers if isinstance(h, _Libraries)]:
        root.removeHandler(old)
    root.addHandler(_Libraries(logging.WARNING))
