"""structlog set-up: JSON lines on stderr, console rendering on a terminal.

Libraries that log through the stdlib (picows, and asyncio's own reports) are routed
through structlog too, warnings and up: without a handler, logging's last resort would
print them on stderr as bare text among the JSON lines."""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog

LIBRARIES = ("picows", "asyncio")


class _ToStructlog(logging.Handler):
    """A stdlib logging record as a structlog line (logger name, level, message, and the
    traceback when there is one)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger().log(record.levelno, record.getMessage(), logger=record.name,
                                       exc_info=record.exc_info or False)
        except Exception:
            self.handleError(record)


class _Sink:
    """stderr that never raises. With its reader gone (a closed pipe, a full disk behind a
    redirect) a log line is lost, counted, and the collector goes on recording and still
    stops on SIGTERM (whose handler logs first)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.lost = 0

    def write(self, data: Any) -> int:
        try:
            return int(self._stream.write(data))
        except (OSError, ValueError):  # BrokenPipeError, EIO, ENOSPC; ValueError: closed
            self.lost += 1
            return 0

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass


def route_libraries(level: str) -> None:
    """Send the LIBRARIES' stdlib loggers through structlog (idempotent: on every reload)."""
    threshold = max(logging.WARNING, logging.getLevelName(level.upper()))
    for name in LIBRARIES:
        lib = logging.getLogger(name)
        lib.handlers = [h for h in lib.handlers if not isinstance(h, _ToStructlog)]
        lib.addHandler(_ToStructlog())
        lib.setLevel(threshold)
        lib.propagate = False


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if stream.isatty():
        processors = shared + [structlog.dev.ConsoleRenderer()]
        factory: object = structlog.PrintLoggerFactory(cast(TextIO, _Sink(stream)))
    else:
        processors = shared + [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(cast(BinaryIO, _Sink(getattr(stream, "buffer", stream))))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,  # type: ignore[arg-type]  # structlog types one factory per branch
        cache_logger_on_first_use=False,
    )
    route_libraries(level)
