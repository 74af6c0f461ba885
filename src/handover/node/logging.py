"""structlog set-up: JSON in production, readable in a terminal.

Log events carry identifiers (pid, node, request id, field names), never
personal data values: bodies are never passed to a logger, and a processor
drops any key named like a body as a second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_FORBIDDEN_KEYS = frozenset({"body", "payload", "plaintext", "content", "corrected_body"})


def _drop_bodies(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _FORBIDDEN_KEYS & event.keys():
        event[key] = "[withheld]"
    return event


def _orjson_dumps(event: Any, **_kw: Any) -> bytes:
    return orjson.dumps(event, default=str)


class _LibraryLogs(logging.Handler):
    """Libraries' stdlib log records (aiohttp's server errors, asyncpg) as one
    structured line each: the logger, the static message template and the
    exception type. Never the interpolated arguments or a traceback: those can
    quote what a client sent (a malformed request line, a header)."""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        structlog.get_logger("library").log(
            record.levelno,
            "library_log",
            logger=record.name,
            message=str(record.msg)[:200],
            error_type=None if exc is None else type(exc).__name__,
        )


def configure(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any
    factory: Any
    if use_json:
        # orjson writes bytes straight to stderr: a fraction of the stdlib's cost
        # per line, which matters at a few log lines per packet.
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer()
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_bodies,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiohttp's access log would print URLs (with query strings such as
    # justifications); keep it off, our middleware logs requests itself.
    logging.getLogger("aiohttp.access").disabled = True
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_LibraryLogs(level=logging.WARNING))
