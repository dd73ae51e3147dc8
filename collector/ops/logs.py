"""structlog set-up: JSON lines on stderr, console rendering on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import BinaryIO, TextIO, cast

import orjson
import structlog


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if stream.isatty():
        processors = shared + [structlog.dev.ConsoleRenderer()]
        factory: object = structlog.PrintLoggerFactory(stream)
    else:
        processors = shared + [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(cast(BinaryIO, getattr(stream, "buffer", stream)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,  # type: ignore[arg-type]  # structlog types one factory per branch
        cache_logger_on_first_use=False,
    )
