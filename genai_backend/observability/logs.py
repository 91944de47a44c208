"""Log lines with the request they belong to: request id and user id in a contextvar, JSON or text."""
from __future__ import annotations

import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from genai_backend.observability import tracing

# What we accept from clients as a request id: visible ASCII without spaces, quotes or commas.
_VALID_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


class RequestLog:
    """What the log lines of one request carry; mutable, so the auth layer can add the user."""

    __slots__ = ("request_id", "user_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.user_id: str | None = None


CURRENT: ContextVar[RequestLog | None] = ContextVar("genai_request_log", default=None)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    if header is not None and _VALID_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()


def set_user(user_id: Any) -> None:
    """The authenticated user of the current request, for its remaining log lines."""
    current = CURRENT.get()
    if current is not None and user_id is not None:
        current.user_id = str(user_id)


_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, request_id, user_id, trace_id."""

    def format(self, record: logging.LogRecord) -> str:
        current = CURRENT.get()
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": current.request_id if current else None,
            "user_id": current.user_id if current else None,
            "trace_id": tracing.trace_id(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in line:
                line[key] = value
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The human-readable default, with the request id (and trace id) appended when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        current = CURRENT.get()
        if current is None:
            return text
        trace_id = tracing.trace_id()
        suffix = f" [request {current.request_id}" + (f" trace {trace_id}]" if trace_id else "]")
        head, newline, rest = text.partition("\n")
        return head + suffix + newline + rest


def configure(level: int, log_format: str) -> None:
    """The root handler for the whole process; `json` makes every line one JSON object."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format.strip().lower() == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library warnings (warnings.warn) become log records, formatted like everything else.
    logging.captureWarnings(True)
