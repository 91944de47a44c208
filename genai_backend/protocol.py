"""Request line and header limits: aiohttp's parser gets headroom so that the error middleware answers in JSON."""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

# The limits a request must keep (aiohttp's own defaults, README §Limits).
MAX_URL_BYTES = 8190
MAX_HEADER_BYTES = 8190
MAX_HEADERS = 128
# What the parser itself accepts: twice as much, so that a request over the limits above is
# still parsed and refused by `oversized` with a JSON answer. Beyond these, aiohttp answers on
# its own (text/plain 400); ~3 MiB of headers per connection at most, as before ~1 MiB.
PARSER_MAX_LINE = 2 * MAX_URL_BYTES
PARSER_MAX_FIELD = 2 * MAX_HEADER_BYTES
PARSER_MAX_HEADERS = 2 * MAX_HEADERS

URL_TOO_LONG = "Request URL is too long"
HEADERS_TOO_LARGE = "Request header fields too large"

log = logging.getLogger(__name__)


class _ProtocolLog(logging.LoggerAdapter):
    """aiohttp's protocol logger: a request its parser refused is one line, without its content.

    aiohttp logs those with a traceback whose message quotes the start of the offending header
    (a bearer token, typically); they are the client's mistake, not the server's.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.warning("refused a malformed request from %s: %s (%s)", args[0] if args else "?",
                         type(exc_info).__name__, exc_info.code)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


# web.Application(handler_args=...): passed to every connection's aiohttp RequestHandler.
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": PARSER_MAX_LINE,
    "max_field_size": PARSER_MAX_FIELD,
    "max_headers": PARSER_MAX_HEADERS,
    "logger": _ProtocolLog(logging.getLogger("genai_backend.protocol"), {}),
}


def oversized(request: web.Request) -> tuple[int, str] | None:
    """(status, detail) when the request line or headers are over the limits; the detail quotes nothing."""
    if len(request.raw_path) > MAX_URL_BYTES:
        return 400, URL_TOO_LONG
    headers = request.raw_headers
    if len(headers) > MAX_HEADERS:
        return 431, HEADERS_TOO_LARGE
    for name, value in headers:
        if len(name) > MAX_HEADER_BYTES or len(value) > MAX_HEADER_BYTES:
            return 431, HEADERS_TOO_LARGE
    return None
