"""structlog configuration: JSON in production, console lines in development."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from core.settings import Environment, Settings


def configure_logging(settings: Settings, stream: TextIO = sys.stdout) -> None:
    renderers: list[structlog.typing.Processor]
    if settings.environment is Environment.PRODUCTION:
        # A logged exception (`exc_info=`) as a structured traceback, not a bare repr;
        # without local variables, which may hold tokens or bank accounts.
        renderers = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ]
    else:
        # A plain traceback: rich's, the default, prints every frame's local variables,
        # which hold decrypted payloads and accounts, and took the event loop 13 s and
        # 4 MB of log for one deep SQLAlchemy error.
        renderers = [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
