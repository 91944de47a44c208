"""Runs: one chat turn (websocket.md §3) with numbered, stored events, shared by the WebSocket and HTTP.

A run is claimed in `runs` (unique per user and request id, which makes a retried send safe), its
turn is checked and stored, and the master agent is invoked in a task of its own: a client that
goes away (socket or HTTP) does not stop it, the answer is stored either way. Every event of a run
(`run.started`, `agent.log`, and one of `run.completed` / `run.failed` / `run.cancelled`) is a row
in `run_events`; readers on any process read the rows after the last one they sent whenever a
NOTIFY (or a periodic poll, in case one was missed) wakes them.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from genai_backend.auth import secrets
from genai_backend.bus.invoke import INVOKER, Invocation, RouterUnreachable
from genai_backend.config import SETTINGS, Settings
from genai_backend.db import DATABASE_ERRORS, DSN, POOL, queries
from genai_backend.jobs.retention import ABANDONED_MARGIN
from genai_backend.observability import tracing
from genai_backend.storage import FILES
from genai_backend.validation import FieldError, parse_uuid

log = logging.getLogger(__name__)

CHANNEL = "genai_run_events"
# A run ended as cancelled (payload: its id): the process running it stops its invocation.
CANCELS = "genai_run_cancels"
DECRYPT_FAILED = ("Could not decrypt api_key. Make sure 'api_key' exists and model config was created "
                  "beforehand ")
FOREIGN_SESSION = "session_id belongs to another user"
ROUTER_DOWN = "Cannot connect to router service. Try again later"
UNEXPECTED = "Unexpected error occured. Try again later"
CANCELLED = "Run cancelled"
TITLE_LENGTH = 20
# A missed notification (or a dead listener connection) delays a reader by at most this long.
POLL = 2.0
CONNECT_TIMEOUT = 5.0
RECONNECT_MAX = 2.0
# How long shutdown lets runs in flight finish before abandoning them.
SHUTDOWN_GRACE = 5.0
FINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled"})


class TurnRefused(Exception):
    """The message cannot be run: the WebSocket closes with `close_code`, HTTP answers `status`."""

    def __init__(self, message: str, close_code: int, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code
        self.status = status


class RunConflict(Exception):
    """The request id was used before with a different message."""


class TooManyRuns(Exception):
    """The user has MAX_RUNS_PER_USER runs in flight already (HTTP 429 with Retry-After)."""

    retry_after = 5.0

    def __init__(self, cap: int) -> None:
        super().__init__(f"Too many runs in progress: at most {cap} per user; send again when one has finished")


@dataclass
class Submitted:
    run: Any  # the `runs` row
    created: bool


def body_hash(session_id: uuid.UUID, frame: dict[str, Any]) -> bytes:
    """What makes two sends with one request id the same send."""
    canonical = {"session_id": str(session_id), "message": frame["message"], "provider": frame["provider"],
                 "llm_name": frame["llm_name"], "files": list(frame.get("files") or [])}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).digest()


def _uuids(values: list[str]) -> list[uuid.UUID]:
    """The parseable ids; malformed ones are ignored (websocket.md §3 step 5)."""
    ids = []
    for value in values:
        try:
            ids.append(parse_uuid(value))
        except FieldError:
            continue
    return ids


def _configs(llm: Any, api_key: str | None) -> dict[str, Any]:
    """Fixed keys, then credentials, then provider metadata, then the key (websocket.md §3 step 7)."""
    configs = {"provider": llm["provider"], "model": llm["model"], "temperature": llm["temperature"],
               "system_prompt": llm["system_prompt"], "user_prompt": llm["user_prompt"],
               "config_name": llm["config_name"], "max_last_messages": llm["max_last_messages"]}
    for extra in (llm["credentials"], llm["metadata"]):
        if isinstance(extra, dict):
            configs.update(extra)
    configs["api_key"] = api_key
    return configs


def _answer_object(result: Invocation) -> Any:
    # D09: a failure is shaped like an answer, so the front-end can render it and its history.
    if result.is_success:
        return result.response
    return {"agents_trace": [], "response": str(result.response), "is_success": False}


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


async def prepare_turn(app: web.Application, user_id: uuid.UUID, session_id: uuid.UUID, frame: dict[str, Any],
                       request_id: uuid.UUID, verified_keys: dict[str, str]) -> tuple[Any, str | None]:
    """Steps 2-6: the configuration (refused if it is missing or its key unreadable), then the
    conversation, the attachments and the user message. `verified_keys` (provider name -> the
    stored ciphertext last seen to decrypt) is only a hint: the database writes nothing unless
    the provider's key still equals it (sql/chats.sql start_chat_turn)."""
    secret = app[SETTINGS].secret_keys
    provider, message = frame["provider"], frame["message"]
    known_key = verified_keys.get(provider)
    for _ in range(3):
        turn = await queries.start_chat_turn(
            app[POOL], creator_id=user_id, provider=provider, config_name=frame["llm_name"],
            api_key=known_key, session_id=session_id, title=message[:TITLE_LENGTH] or "New Chat",
            request_id=request_id, message=message, file_ids=_uuids(frame.get("files") or []))
        if turn["provider_id"] is None:
            raise TurnRefused(f"Provider {provider} does not exist", 1003, 400)
        if turn["config_id"] is None:
            raise TurnRefused(f"Config {frame['llm_name']} does not exist", 1003, 400)
        if turn["ready"]:
            break
        # A key not decrypted yet: check it before anything is written.
        known_key = turn["api_key"]
        if known_key is not None:
            try:
                await secrets.decrypt(known_key, secret)
            except secrets.InvalidCiphertext:
                raise TurnRefused(DECRYPT_FAILED, 1000, 400) from None
    else:
        raise RuntimeError("the provider's key kept changing")
    if not turn["stored"]:
        # Another user created this session id meanwhile (D28 holds past the handshake too).
        raise TurnRefused(FOREIGN_SESSION, 1008, 403)
    if known_key is None:
        return turn, None
    verified_keys[provider] = known_key
    return turn, await secrets.decrypt(known_key, secret)  # memoised: no scrypt here


def answer_of(run: Any) -> Any:
    """The stored answer object of an ended run (jsonb comes back as text), or None."""
    return None if run is None or run["answer"] is None else json.loads(run["answer"])


def cancelled_answer(request_id: uuid.UUID, session_id: uuid.UUID) -> dict[str, Any]:
    return {"type": "agent_response", "response": {
        "execution_time": 0.0, "response": {"agents_trace": [], "response": CANCELLED, "is_success": False},
        "request_id": str(request_id), "session_id": str(session_id), "files": []}}


def _in_flight_window(settings: Settings) -> float:
    """How long a running run counts against the cap: past it, the run is abandoned (retention job)."""
    timeout = settings.master_agent_timeout
    return timeout + ABANDONED_MARGIN if timeout > 0 else 10.0 ** 9


class Runs:
    """This process's runs in flight, and the listener that wakes readers of any run's events."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.pool: asyncpg.Pool = app[POOL]
        # The result is the invocation (None when it failed), for the WebSocket's timing log.
        self.tasks: dict[uuid.UUID, asyncio.Task[Invocation | None]] = {}
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    # --- starting and ending -----------------------------------------------------------------

    async def submit(self, user_id: uuid.UUID, session_id: uuid.UUID, frame: dict[str, Any],
                     request_id: uuid.UUID | None, verified_keys: dict[str, str]) -> Submitted:
        """Claim the run and start it, or find the earlier send with this request id."""
        digest = body_hash(session_id, frame)
        request_id = request_id or uuid.uuid4()
        row = await self._claim(user_id, session_id, request_id, digest)
        if not row["created"]:
            if bytes(row["body_hash"]) != digest:
                raise RunConflict("request_id was already used with a different message")
            return Submitted(row, False)
        try:
            turn, api_key = await prepare_turn(self.app, user_id, session_id, frame, request_id, verified_keys)
        except BaseException:
            await queries.drop_run(self.pool, id=row["id"])
            raise
        await queries.append_run_event(self.pool, id=row["id"], event="run.started", data=_json(
            {"request_id": str(request_id), "session_id": str(session_id)}))
        task = asyncio.create_task(self._run(row["id"], turn, api_key, user_id, session_id, request_id))
        self.tasks[row["id"]] = task
        task.add_done_callback(lambda _: self.tasks.pop(row["id"], None))
        return Submitted(row, True)

    async def _claim(self, user_id: uuid.UUID, session_id: uuid.UUID, request_id: uuid.UUID, digest: bytes) -> Any:
        """The new run's row, or the earlier one with this request id; TooManyRuns over the cap."""
        settings = self.app[SETTINGS]
        cap = settings.max_runs_per_user
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                if cap > 0:
                    await queries.lock_user_runs(conn, user_id=user_id)
                    # A resend of a run is never refused: it starts nothing.
                    earlier = await queries.get_run_by_request(conn, user_id=user_id, request_id=request_id)
                    if earlier is not None:
                        return {**earlier, "created": False}
                    running = await queries.count_running_runs(conn, user_id=user_id,
                                                               younger_than_seconds=_in_flight_window(settings))
                    if running >= cap:
                        raise TooManyRuns(cap)
                row = await queries.claim_run(conn, id=uuid.uuid4(), user_id=user_id, session_id=session_id,
                                              request_id=request_id, body_hash=digest)
            if row is not None:
                return row
            # None when a concurrent send claimed the id in between (no cap, so no lock): its insert
            # made ours a no-op, but it committed after this statement's snapshot. The next try sees it.

    async def _run(self, run_id: uuid.UUID, turn: Any, api_key: str | None, user_id: uuid.UUID,
                   session_id: uuid.UUID, request_id: uuid.UUID) -> Invocation | None:
        """Steps 7-11: invoke, store the answer (a failure shaped as one), collect result files."""
        try:
            payload = {"session_id": str(session_id), "user_id": str(user_id),
                       "configs": _configs(turn, api_key), "files": turn["files"], "timestamp": int(time.time())}
            result = await self.app[INVOKER].invoke(payload, request_id, session_id)
            await self._complete(run_id, result, user_id, session_id, request_id)
            return result
        except RouterUnreachable as exc:
            log.warning("chat of user %s: router unreachable: %s", user_id, exc)
            await self._fail(run_id, "router_unreachable", ROUTER_DOWN)
        except Exception:
            log.exception("chat of user %s failed", user_id)
            await self._fail(run_id, "error", UNEXPECTED)
        return None

    async def _complete(self, run_id: uuid.UUID, result: Invocation, user_id: uuid.UUID, session_id: uuid.UUID,
                        request_id: uuid.UUID) -> None:
        response = _answer_object(result)
        content = response if isinstance(response, str) else json.dumps(response)
        async with self.pool.acquire() as conn, conn.transaction():
            state = await queries.lock_run(conn, id=run_id)
            if state is None or state["state"] != "running":
                return  # cancelled meanwhile: the answer is discarded
            finished = await queries.finish_chat_turn(conn, session_id=session_id, creator_id=user_id,
                                                      request_id=request_id, content=content)
            files = finished["files"]
            if files:
                present = await self.app[FILES].existing(f["internal_name"] for f in files)
                files = [f for f in files if f["internal_name"] in present]
            answer: dict[str, Any] = {"type": "agent_response", "response": {
                "execution_time": result.execution_time if result.is_success else 0.0, "response": response,
                "request_id": str(request_id), "session_id": str(session_id), "files": files}}
            if (trace_id := tracing.trace_id()) is not None:
                answer["response"]["trace_id"] = trace_id  # additive: only while tracing is on
            await queries.end_run(conn, id=run_id, state="completed", answer=_json(answer),
                                  event="run.completed", data=_json(answer))

    async def _fail(self, run_id: uuid.UUID, reason: str, detail: str) -> None:
        failure = {"detail": detail, "reason": reason}
        with suppress(*DATABASE_ERRORS):
            await queries.end_run(self.pool, id=run_id, state="failed", answer=_json(failure),
                                  event="run.failed", data=_json(failure))

    async def cancel(self, run: Any) -> bool:
        """End a running run as cancelled; False when it had ended already. The history says so."""
        answer = cancelled_answer(run["request_id"], run["session_id"])
        content = json.dumps(answer["response"]["response"])
        async with self.pool.acquire() as conn, conn.transaction():
            state = await queries.lock_run(conn, id=run["id"])
            if state is None or state["state"] != "running":
                return False
            await queries.finish_chat_turn(conn, session_id=run["session_id"], creator_id=run["user_id"],
                                           request_id=run["request_id"], content=content)
            await queries.end_run(conn, id=run["id"], state="cancelled", answer=_json(answer),
                                  event="run.cancelled", data=_json(answer))
            # Sent at commit, to every process; the one running it (maybe this one) stops it.
            await queries.notify_run_cancelled(conn, id=run["id"])
        return True

    async def get(self, user_id: uuid.UUID, session_id: uuid.UUID, request_id: uuid.UUID) -> Any:
        return await queries.get_run(self.pool, user_id=user_id, session_id=session_id, request_id=request_id)

    # --- reading ---------------------------------------------------------------------------------

    async def wait(self, run_id: uuid.UUID) -> tuple[Any, Invocation | None]:
        """The run's row once it has ended (from any process), and the invocation if it ran here."""
        task = self.tasks.get(run_id)
        result = None
        if task is not None:
            try:
                # Shielded: the waiter going away must not stop the run.
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise
                # The run was cancelled (the task stopped): its stored row says so.
        async for _ in self.events(run_id, 0, only_final=True):
            pass
        return await queries.get_run_by_id(self.pool, id=run_id), result

    async def events(self, run_id: uuid.UUID, after: int, heartbeat: float | None = None,
                     only_final: bool = False) -> AsyncIterator[tuple[int, str, Any] | None]:
        """The run's events after `after`, live until its final one; None when `heartbeat` seconds
        pass without any (for the caller to send a keep-alive)."""
        wake = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(wake)
        try:
            quiet = 0.0
            while True:
                wake.clear()
                rows = [r async for r in queries.list_run_events(self.pool, run_id=run_id, after_seq=after)]
                for row in rows:
                    after = row["seq"]
                    if not only_final or row["event"] in FINAL_EVENTS:
                        yield row["seq"], row["event"], json.loads(row["data"])
                    if row["event"] in FINAL_EVENTS:
                        return
                if rows:
                    quiet = 0.0
                if not rows and await queries.get_run_by_id(self.pool, id=run_id) is None:
                    return  # deleted
                with suppress(TimeoutError):
                    async with asyncio.timeout(POLL):
                        await wake.wait()
                if not wake.is_set():
                    quiet += POLL
                if heartbeat is not None and quiet >= heartbeat:
                    quiet = 0.0
                    yield None
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[run_id]

    # --- the listener ----------------------------------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            run_id = uuid.UUID(payload)
        except ValueError:
            return
        for wake in self._waiters.get(run_id, ()):
            wake.set()

    def _cancelled(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """Another request cancelled a run that this process is running: stop waiting for its answer."""
        try:
            task = self.tasks.get(uuid.UUID(payload))
        except ValueError:
            return
        if task is not None:
            # The invocation's router connection closes; a late answer has nowhere to go.
            task.cancel()

    def _wake_all(self, *_: Any) -> None:
        for waiters in self._waiters.values():
            for wake in waiters:
                wake.set()

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.app[DSN], timeout=CONNECT_TIMEOUT,
                                             server_settings={"application_name": "genai-backend run listener"})
                conn.add_termination_listener(self._wake_all)
                await conn.add_listener(CHANNEL, self._notified)
                await conn.add_listener(CANCELS, self._cancelled)
                # Whatever was stored while we were away.
                self._wake_all()
                delay = 0.1
                while not conn.is_closed():
                    await asyncio.sleep(POLL)
            except DATABASE_ERRORS as exc:
                log.warning("run listener lost its database connection (%s); reconnecting", type(exc).__name__)
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="run listener")

    async def stop(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=SHUTDOWN_GRACE)
        for task in list(self.tasks.values()):
            task.cancel()
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener


RUNS = web.AppKey("runs", Runs)


async def runs_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the pool and the invoker; stopped before them, letting runs in flight finish."""
    runs = Runs(app)
    app[RUNS] = runs
    runs.start()
    try:
        yield
    finally:
        await runs.stop()
