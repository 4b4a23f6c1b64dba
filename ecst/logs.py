"""Logging of every ecst process: one line per record on stderr, as text or as JSON lines, every
line redacted (no secret reaches a log, whatever the format).

The level and the format come from the one `Settings` object (`--log-level` / `ECST_LOG_LEVEL`,
`--log-format` / `ECST_LOG_FORMAT`). `ecst consume` logs at INFO unless told otherwise, as Kafka
Connect and Debezium do: a running service says what it does (one line per applied batch); the
one-shot commands log at WARNING, their output is what they print.

A JSON line holds `ts` (UTC, ISO 8601), `level`, `logger` and `message`, then the record's
structured fields (what the code passed as `extra=`), and `exc` for an exception's traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from ecst.settings import RedactingFilter, Settings, redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (its `extra=`)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _clean(value: Any) -> Any:
    """`value` ready for JSON, every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the record's fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        doc: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in fields(record).items():
            doc.setdefault(key, _clean(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


# The level each command logs at unless told otherwise: a running service says what it does.
DEFAULT_LEVELS = {"consume": "INFO"}


def configure_logging(settings: Settings, command: str | None) -> None:
    """Log to stderr at the settings' level (else `command`'s default), in their format."""
    setup_logging(settings.log_level or DEFAULT_LEVELS.get(command or "", "WARNING"), settings.log_format)


def setup_logging(level: str, fmt: str = "text", *, kafka_level: int = logging.CRITICAL,
                  stream: TextIO | None = None) -> logging.Handler:
    """Send every record to `stream` (stderr) in `fmt`, redacted; ecst's loggers at `level`.
    kafka-python logs every refused connection at ERROR: ecst reports what matters itself, so its
    loggers stay at `kafka_level`. Replaces the handler an earlier call installed."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ecst", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._ecst = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    # other libraries: their warnings, or everything at DEBUG
    root.setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("ecst").setLevel(level)
    logging.getLogger("kafka").setLevel(kafka_level)
    return handler
