"""Serve one app on one port: read time-outs for slow clients, start-up and shutdown as a person reads them."""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from genai_backend.config import ConfigError, Settings
from genai_backend.errors import ApiError

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0

_HEADER_TIMEOUT_BODY = b'{"detail":"Request header read timed out"}'
# Written straight to the transport: there is no request, so no middleware to render it.
_HEADER_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                            % (len(_HEADER_TIMEOUT_BODY), _HEADER_TIMEOUT_BODY))


# What a request the parser refused (far over the line/header limits, or not HTTP) is told.
_UNPARSABLE_BODY = b'{"detail":"Malformed request, or its request line or headers are too large"}'


class BodyReadTimeout(ApiError):
    status = 408


@dataclass(frozen=True)
class ReadTimeouts:
    header: float
    body: float

    @classmethod
    def of(cls, settings: Settings) -> ReadTimeouts:
        return cls(settings.header_read_timeout, settings.body_read_timeout)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with the two read time-outs it lacks.

    Header: armed when the connection opens and again when the first byte of a new request
    arrives on an idle keep-alive connection; disarmed once the parser has a whole head.
    Expiry answers 408 (if any byte came) and closes: a client that trickles a header one byte
    at a time holds a connection for at most this long.

    Body: while a request's body is incomplete, the time since its last byte is checked; after
    the limit the body read fails with 408 and the connection closes. Only silence counts,
    never a slow upload that keeps sending, and never a pause caused by our own flow control.

    WebSockets are exempt once upgraded (chat sockets idle for hours by design).
    """

    __slots__ = ("_read_timeouts", "_head_timer", "_body_timer", "_body", "_body_last", "_head_bytes")

    def __init__(self, manager: web.Server, *, read_timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._read_timeouts = read_timeouts
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: Any = None
        self._body_last = 0.0
        self._head_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = self._waiter is not None and not self._waiter.done() and not self._messages
        queued = len(self._messages)
        super().data_received(data)
        if self._upgraded or self._payload_parser is not None:
            self._disarm()
            return
        if len(self._messages) > queued:
            self._cancel_head()
            _message, payload = self._messages[-1]
            if not payload.is_eof():
                self._watch_body(payload)
        elif self._body is not None:
            self._body_last = self._loop.time()
        elif data and idle:
            self._head_bytes = True
            if self._head_timer is None:
                self._arm_head()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # aiohttp's own answer is text/plain and quotes the start of the refused line (a bearer
        # token, typically); ours is JSON and quotes nothing. The protocol logger logs one line.
        self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response")
        code = exc.code if 400 <= exc.code < 500 else 400
        response = web.Response(status=code, body=_UNPARSABLE_BODY, content_type="application/json")
        response.force_close()
        return response

    # --- header ---------------------------------------------------------------------------------

    def _arm_head(self) -> None:
        if self._read_timeouts.header > 0:
            self._head_timer = self._loop.call_later(self._read_timeouts.header, self._head_expired)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = False

    def _head_expired(self) -> None:
        self._head_timer = None
        # Only a connection still waiting for a head: a request in progress is the body's business.
        if self._messages or self._current_request is not None or self._waiter is None or self._waiter.done():
            return
        transport = self.transport
        if transport is not None and self._head_bytes:
            transport.write(_HEADER_TIMEOUT_RESPONSE)
        self.force_close()

    # --- body -----------------------------------------------------------------------------------

    def _watch_body(self, payload: Any) -> None:
        if self._read_timeouts.body <= 0:
            return
        self._body = payload
        self._body_last = self._loop.time()
        if self._body_timer is None:
            self._body_timer = self._loop.call_later(self._read_timeouts.body, self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        payload = self._body
        if payload is None or payload.is_eof() or payload.exception() is not None:
            self._body = None
            return
        now = self._loop.time()
        if self._reading_paused or self._buffer_paused:
            # We stopped reading (the handler is busy with what it has); the client is not silent.
            self._body_last = now
        deadline = self._body_last + self._read_timeouts.body
        if now < deadline:
            self._body_timer = self._loop.call_later(deadline - now, self._check_body)
            return
        self._body = None
        if self._current_request is None:
            # The handler is done and aiohttp is reading the rest away: nobody to answer, just close.
            self.force_close()
            return
        limit = self._read_timeouts.body
        payload.set_exception(BodyReadTimeout(f"Request body read timed out: no data for {limit:g} s"))
        # Marked complete, so aiohttp does not linger reading it; closed after the 408.
        payload.feed_eof()
        self.close()

    def _disarm(self) -> None:
        self._cancel_head()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None


class GuardedServer(web.Server):
    """The protocol factory, making GuardedRequestHandlers."""

    def __init__(self, server: web.Server, read_timeouts: ReadTimeouts) -> None:
        super().__init__(server.request_handler, request_factory=server.request_factory,
                         handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)
        self._read_timeouts = read_timeouts

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, read_timeouts=self._read_timeouts, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, read_timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._read_timeouts = read_timeouts

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self._read_timeouts)


def make_runner(app: web.Application, settings: Settings) -> GuardedAppRunner:
    return GuardedAppRunner(app, ReadTimeouts.of(settings), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                            keepalive_timeout=settings.keepalive_timeout)


StartupHook = Callable[[web.Application], Awaitable[None]]


async def _serve(settings: Settings, reuse_port: bool, on_ready: Callable[[str], None],
                 startup_hooks: Sequence[StartupHook]) -> None:
    from genai_backend.app import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("shutting down (%s)", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop, sig)
    app = create_app(settings)
    app.on_startup.extend(startup_hooks)
    runner = make_runner(app, settings)
    try:
        # A signal during start-up is honoured once start-up is done: cancelling it half-way
        # could leave the embedded PostgreSQL started and nobody to stop it.
        await runner.setup()
        if stop.is_set():
            return
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        port = sockets[0].getsockname()[1] if sockets else settings.port
        on_ready(f"http://{settings.host}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("stopped")


def serve(settings: Settings, *, reuse_port: bool = False, on_ready: Callable[[str], None] | None = None,
          startup_hooks: Sequence[StartupHook] = ()) -> None:
    """Serve until SIGINT or SIGTERM; `on_ready(url)` runs once the port is bound."""
    def announce(url: str) -> None:
        log.info("serving on %s (docs at /docs)", url)

    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(settings, reuse_port, on_ready or announce, startup_hooks))
