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
        renderers = [structlog.dev.ConsoleRenderer(colors=False)]
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
