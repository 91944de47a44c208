"""Real `genai_session` agents, master agent and invokers run as asyncio tasks inside the test process.

Quirks of genai-protocol 1.0.9 that shape these helpers (and the back-end's own router session):

* `process_events()` only returns when the session's private `_shutdown_event` is set, which the
  library does only when an incoming frame carries an `error` whose `error_type` maps to an
  exception (any of the five bus error types, not just `AgentGeneralError`). When the router
  closes the socket (any code, or TCP drop) the listener task dies with
  `RouterInaccessibleException` (close codes other than 1000/1001) or `ConnectionClosedOK`
  (1000/1001, not even wrapped), and `process_events()` keeps waiting forever (agent-bus.md §7).
  Setting `_shutdown_event` is the clean way out: the library cancels its listener and leaves
  `websockets.connect()`, which sends a 1000 close; if the listener had already died,
  `process_events()` re-raises the listener's exception at that point.
* Cancelling `process_events()` closes the socket too (the `async with` exits) but leaves the
  listener task orphaned; it later fails with `ConnectionClosedOK` ("Task exception was never
  retrieved" at garbage collection). Handler tasks for in-flight requests are never cancelled.
* A frame whose `error` has no or an unknown `error_type` (e.g. the router's
  `Agent has been unregistered` broadcast) makes the library call `None(message)`; the
  resulting `TypeError` escapes a done-callback and is only logged by asyncio ("Exception in
  callback"). The session keeps running.
* Errors from the initial connect: a refused connection becomes `RouterInaccessibleException`;
  other failures (HTTP status, DNS, reset) escape as raw `websockets`/`OSError` exceptions.
* All sessions share ONE logger (`genai_session.session.GenAISession`): every constructor calls
  `setLevel(log_level)` on it (last one wins, process-wide) and the first adds a stderr handler
  with `propagate=False`, so pytest's caplog never sees it. `RecordingSession` swaps in a private
  logger per instance that propagates to `tests.genai_session` (and so to caplog).
* `bind()` builds the input schema from *runtime* annotations: a handler defined in a module with
  `from __future__ import annotations` gets `{}` for every parameter type. That is why this module
  does not use the future import. Without `name=`, the agent name is the docstring.
* `agent_context` is one object per connection; its `request_id`/`session_id` (and the
  session's) are overwritten by every incoming frame, so a handler must read them before its
  first `await` when requests can overlap.
* `send()` opens its own websocket with `x-custom-invoke-key: "<agent_id>:<target>"`, ignores frames
  without `message_type` (so router rule 3.3's error is never seen; it waits for the timeout),
  treats a falsy `close_timeout` (None or 0) as "wait forever", applies the timeout per frame,
  and lets `ConnectionClosed*`/`OSError` escape if the router goes away.
* `ContextLogger` sends log frames from fire-and-forget tasks (no reference kept, no send lock);
  `websockets` clients default to `max_size=1 MiB` (a larger frame kills the connection) and
  ping every 20 s. No threads and no uvloop are involved; everything runs on the caller's loop.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt as pyjwt
from genai_session.session import GenAISession
from genai_session.utils.agents import AgentResponse
from genai_session.utils.context import GenAIContext
from genai_session.utils.exceptions import BaseAIAgentException

from tests.router_double import DEFAULT_BE_KEY, DEFAULT_ML_KEY

log = logging.getLogger(__name__)

TEST_SECRET_KEY = "test-secret-key-for-agent-jwts-0123456789"
FAR_FUTURE_EXP = 253402300799  # 9999-12-31T23:59:59Z, what the reference puts in agent tokens
_LIBRARY_SILENT = logging.CRITICAL + 1
_LOG_PARENT = logging.getLogger("tests.genai_session")


def make_agent_jwt(
    agent_id: str | None = None, user_id: str | None = None, secret: str = TEST_SECRET_KEY
) -> str:
    """An agent token shaped like the back-end's: HS256 `{"sub", "exp", "user_id"}`."""
    agent_id = agent_id or str(uuid.uuid4())
    payload = {"sub": agent_id, "exp": FAR_FUTURE_EXP, "user_id": user_id or agent_id}
    return pyjwt.encode(payload, secret, algorithm="HS256")


class _RegisterSignal(asyncio.Event):
    """`process_events` clears its shutdown event right after sending `agent_register`;
    this event reports that moment, the only hook the library offers for "connected"."""

    def __init__(self, connected: asyncio.Event) -> None:
        super().__init__()
        self._connected = connected

    def clear(self) -> None:
        super().clear()
        self._connected.set()


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RecordingSession(GenAISession):
    """An unmodified GenAISession on the wire that also records why it stopped and what it logged."""

    def __init__(
        self, *, ws_url: str, api_base_url: str = "", jwt_token: str = "", api_key: str = ""
    ) -> None:
        # The level lands on the library's process-wide logger; keep it quiet for everyone.
        super().__init__(
            ws_url=ws_url,
            api_base_url=api_base_url,
            jwt_token=jwt_token,
            api_key=api_key,
            log_level=_LIBRARY_SILENT,
        )
        self.log_records: list[logging.LogRecord] = []
        private = logging.Logger(f"tests.genai_session.{self.agent_id}", logging.DEBUG)
        private.parent = _LOG_PARENT
        private.addHandler(_ListHandler(self.log_records))
        self.logger = private
        self.exit_error: BaseAIAgentException | None = None
        self.request_errors: list[BaseException] = []
        self.connected = asyncio.Event()
        self._shutdown_event = _RegisterSignal(self.connected)

    def _handle_task_result(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, BaseAIAgentException):
            if self.exit_error is None:
                self.exit_error = exc
            super()._handle_task_result(task)  # logs and sets the shutdown event, as upstream
        elif exc is not None:
            # Upstream lets this escape into asyncio's "Exception in callback" log; same effect
            # on the wire, minus the noise.
            self.request_errors.append(exc)
            self.logger.warning("request task failed: %r", exc)

    @property
    def log_messages(self) -> list[str]:
        return [r.getMessage() for r in self.log_records]


@dataclass
class MasterCall:
    """One invocation seen by the stub master agent."""

    request_id: str  # agent_context.request_id, read before the handler's first await
    session_id: str  # agent_context.session_id, likewise
    kwargs: dict[str, Any]  # session_id, user_id, configs, files, timestamp
    statuses: dict[str, int] = field(default_factory=dict)  # "chat", "agents_active" → HTTP status
    chat: Any = None
    active_agents: Any = None


@dataclass(eq=False)
class RunningAgent:
    """A `process_events()` task and its session; `calls` is filled by the stub master agent."""

    session: RecordingSession
    task: "asyncio.Task[None]"
    calls: list[MasterCall] = field(default_factory=list)

    @property
    def agent_id(self) -> str:
        return str(self.session.agent_id)

    @property
    def done(self) -> bool:
        return self.task.done()

    @property
    def exit_error(self) -> str | None:
        """The error text the library exited on (e.g. `Agent ID was not registered before`)."""
        return None if self.session.exit_error is None else str(self.session.exit_error)

    @property
    def failure(self) -> BaseException | None:
        """The exception `process_events()` ended with (connect refused, ...), if any."""
        if not self.task.done() or self.task.cancelled():
            return None
        return self.task.exception()

    async def wait_connected(self, timeout: float = 5) -> None:
        """Wait until the register frame was sent; raise if the session ended first."""
        connected = asyncio.ensure_future(self.session.connected.wait())
        try:
            await asyncio.wait(
                {connected, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
        if self.session.connected.is_set():
            return
        if self.task.done():
            raise RuntimeError(f"agent {self.agent_id} ended before connecting") from self.failure
        raise TimeoutError(f"agent {self.agent_id} did not connect within {timeout}s")

    async def wait_done(self, timeout: float = 5) -> None:
        """Wait for `process_events()` to end on its own (e.g. told to go away by the back-end)."""
        await asyncio.wait({self.task}, timeout=timeout)
        if not self.task.done():
            raise TimeoutError(f"agent {self.agent_id} still running after {timeout}s")

    async def stop(self, timeout: float = 5) -> None:
        """Leave the bus with a clean 1000 close so the router sees a disconnect."""
        if not self.task.done() and self.session.connected.is_set():
            # Before `connected` the library would clear() this flag again, so only set it after.
            self.session._shutdown_event.set()
            await asyncio.wait({self.task}, timeout=timeout)
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})
        _ = self.failure  # retrieve the exception so asyncio does not log it as never retrieved


AgentHandler = Callable[..., Awaitable[Any]]
MasterAnswer = Callable[[MasterCall], Awaitable[Any]]


async def echo(agent_context: GenAIContext, text: str) -> str:
    """Echo the given text back unchanged."""
    return text


def _start(session: RecordingSession, send_logs: bool) -> "asyncio.Task[None]":
    return asyncio.create_task(
        session.process_events(send_logs=send_logs), name=f"genai_session {session.agent_id}"
    )


async def run_agent(
    ws_url: str,
    jwt: str,
    name: str,
    description: str,
    handler: AgentHandler | None = None,
    api_base_url: str = "",
    *,
    send_logs: bool = True,
    wait: bool = True,
    timeout: float = 5,
) -> RunningAgent:
    """Run a user agent (`GenAISession(jwt_token=jwt)`) bound to `handler` (default: `echo`).

    With `wait`, returns once the agent's register frame is sent (the router may not have
    forwarded it yet). Call `stop()` when done.
    """
    session = RecordingSession(ws_url=ws_url, api_base_url=api_base_url, jwt_token=jwt)
    session.bind(name=name, description=description)(handler or echo)
    agent = RunningAgent(session, _start(session, send_logs))
    if wait:
        await agent.wait_connected(timeout)
    return agent


async def run_master_agent(
    ws_url: str,
    api_key: str = DEFAULT_ML_KEY,
    handler: AgentHandler | None = None,
    *,
    api_base_url: str = "",
    master_be_api_key: str = DEFAULT_BE_KEY,
    call_back: bool = False,
    answer: MasterAnswer | None = None,
    send_logs: bool = True,
    wait: bool = True,
    timeout: float = 5,
) -> RunningAgent:
    """Run a stub master agent (`GenAISession(api_key=...)`, router id `master_server_ml`).

    The default handler has the real master agent's parameters, records a `MasterCall` in
    `RunningAgent.calls`, and answers `{"agents_trace": [], "response": "echo: <text>",
    "is_success": True}` where `<text>` is the latest user message (with `call_back`) or the
    session id. With `call_back` it first calls `GET /api/chat` and
    `GET /api/agents/active?agent_type=all` on `api_base_url` with `X-API-KEY:
    master_be_api_key`, like the real one, and records statuses and bodies. `answer` replaces
    the reply (it gets the recorded call); `handler` replaces everything.
    `send_logs=True` mirrors the real master agent, which logs each invocation (configs included).
    """
    session = RecordingSession(ws_url=ws_url, api_base_url=api_base_url, api_key=api_key)
    calls: list[MasterCall] = []

    async def master_agent(
        agent_context: GenAIContext,
        session_id: str,
        user_id: str,
        configs: dict,  # type: ignore[type-arg]  # bare `dict`/`list` give the schema the reference has
        files: list,  # type: ignore[type-arg]
        timestamp: int,
    ) -> Any:
        """Stub master agent: records the call and echoes the latest user message."""
        call = MasterCall(
            request_id=agent_context.request_id,
            session_id=agent_context.session_id,
            kwargs={
                "session_id": session_id,
                "user_id": user_id,
                "configs": configs,
                "files": files,
                "timestamp": timestamp,
            },
        )
        calls.append(call)
        text = session_id
        if call_back:
            per_page = configs.get("max_last_messages", 5) if isinstance(configs, dict) else 5
            await _call_back(call, api_base_url, master_be_api_key, session_id, user_id, per_page)
            text = _latest_user_message(call.chat) or session_id
        if answer is not None:
            return await answer(call)
        return {"agents_trace": [], "response": f"echo: {text}", "is_success": True}

    session.bind(name="master_agent", description="Stub master agent")(handler or master_agent)
    agent = RunningAgent(session, _start(session, send_logs), calls)
    if wait:
        await agent.wait_connected(timeout)
    return agent


async def _call_back(
    call: MasterCall, api_base_url: str, api_key: str, session_id: str, user_id: str, per_page: Any
) -> None:
    headers = {"X-API-KEY": api_key}
    base = api_base_url.rstrip("/")
    async with aiohttp.ClientSession(headers=headers) as http:
        chat_query = {"session_id": session_id, "user_id": user_id, "per_page": str(per_page)}
        requests = {
            "chat": ("/api/chat", chat_query),
            "agents_active": ("/api/agents/active", {"agent_type": "all", "user_id": user_id}),
        }
        for key, (path, params) in requests.items():
            try:
                async with http.get(base + path, params=params) as resp:
                    call.statuses[key] = resp.status
                    body: Any = await resp.json(content_type=None)
            except (aiohttp.ClientError, ValueError) as e:
                log.warning("stub master agent: GET %s failed: %r", path, e)
                call.statuses.setdefault(key, 0)
                body = None
            setattr(call, "chat" if key == "chat" else "active_agents", body)


def _latest_user_message(chat: Any) -> str | None:
    # GET /api/chat lists newest first.
    items = chat.get("items") if isinstance(chat, dict) else None
    for item in items or []:
        if isinstance(item, dict) and item.get("sender_type") == "user":
            return str(item.get("content"))
    return None


async def invoke(
    ws_url: str,
    invoker_key: str,
    target: str,
    payload: dict[str, Any],
    request_id: str = "",
    session_id: str = "",
    timeout: float | None = 5,
) -> AgentResponse:
    """Invoke `target` through a throw-away session, as the back-end does (agent-bus.md §6).

    The router sees client id `"<invoker_key>:<target>"`. `timeout=None` waits forever.
    """
    session = RecordingSession(ws_url=ws_url, api_key=invoker_key)
    session.request_id = request_id
    session.session_id = session_id
    return await session.send(payload, client_id=target, close_timeout=timeout)


class RawClient:
    """A bare router connection (aiohttp) for sending and reading exact frames."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    @classmethod
    async def connect(cls, ws_url: str, headers: dict[str, str]) -> "RawClient":
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(ws_url, headers=headers, autoclose=False)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def send(self, frame: dict[str, Any] | str) -> None:
        if isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_json(frame)

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        """The next JSON frame; AssertionError if the socket closes instead."""
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg!r}"
        frame = msg.json()
        assert isinstance(frame, dict), frame
        return frame

    async def expect_silence(self, duration: float = 0.2) -> None:
        try:
            msg = await self.ws.receive(timeout=duration)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {msg!r}")

    async def receive_close(self, timeout: float = 5) -> tuple[int | None, str]:
        """Wait for the server's close frame; returns (code, reason)."""
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.CLOSE, f"expected close, got {msg!r}"
        return msg.data, msg.extra or ""

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
