"""What the back-end does with each event the router forwards (agent-bus.md §5).

`HANDLERS` maps `message_type` to a coroutine `(bus, payload)`. Handlers are quick (an agent must
show as active within 100 ms of connecting), use their own pool connection, and raise only for
the dispatcher to log: `dispatch` never lets a frame end the session.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
from marshmallow import ValidationError

from genai_backend import limits
from genai_backend.auth import tokens
from genai_backend.config import Settings
from genai_backend.db import queries
from genai_backend.flows_state import reevaluate_flows
from genai_backend.naming import MAX_NAME_LENGTH, alias_base, normalise_name, with_unique_alias
from genai_backend.observability import tracing
from genai_backend.schemas.bus import LogEventSchema, RegisterEventSchema, UnregisterEventSchema
from genai_backend.sockets import SocketRegistry

log = logging.getLogger(__name__)

# One instance each: building a marshmallow schema deep-copies its fields (~0.3 ms, per log line).
_REGISTER_EVENTS = RegisterEventSchema()
_UNREGISTER_EVENTS = UnregisterEventSchema()
_LOG_EVENTS = LogEventSchema()

MASTER_SERVER_ML = "master_server_ml"
NOT_REGISTERED = "Agent ID was not registered before"
NAME_TOO_LONG = f"Agent name must be less than {MAX_NAME_LENGTH} characters"


@dataclass(frozen=True)
class Bus:
    """What handlers may use; built by the session supervisor."""

    pool: asyncpg.Pool
    settings: Settings
    sockets: SocketRegistry
    # Tell an agent to go away (fire and forget): (router client id, error message).
    notify: Callable[[str, str], None]
    # Run a coroutine in the background (tracked, cancelled at shutdown).
    spawn: Callable[[Coroutine[Any, Any, Any]], None]


Handler = Callable[[Bus, dict[str, Any]], Awaitable[None]]


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def on_register(bus: Bus, payload: dict[str, Any]) -> None:
    """An agent connected: verify its token, then mark it active with what it announced (§5.1)."""
    event = _REGISTER_EVENTS.load(payload)
    agent_uuid: str = event["agent_uuid"]
    try:
        claims = tokens.decode(event["agent_jwt"] or "", bus.settings.secret_keys)
    except tokens.InvalidToken:
        claims = None
    # The router names the agent by the token's unverified `sub`; both must agree (defence in depth).
    if claims is None or claims.user_id is None or _as_uuid(agent_uuid) != claims.sub:
        log.info("agent %s presented an invalid token; told to go away", agent_uuid)
        bus.notify(agent_uuid, NOT_REGISTERED)
        return
    raw_name: str = event["agent_name"]
    schema = event["agent_input_schema"] or {}
    async with bus.pool.acquire() as conn:
        alias = await queries.get_agent_alias(conn, agent_id=claims.sub, creator_id=claims.user_id)
        if alias is None:
            log.info("agent %s is not registered (or deleted); told to go away", agent_uuid)
            bus.notify(agent_uuid, NOT_REGISTERED)
            return
        if len(raw_name) > MAX_NAME_LENGTH:
            # The reference fails silently here (D23); say why instead.
            log.info("agent %s announced a name over %d characters; told to go away", agent_uuid, MAX_NAME_LENGTH)
            bus.notify(agent_uuid, NAME_TOO_LONG)
            return
        name = normalise_name(raw_name)

        async def activate(new: str) -> asyncpg.Record | None:
            # A savepoint, so an alias collision can be retried inside the transaction.
            async with conn.transaction():
                return await queries.activate_agent(
                    conn, agent_id=claims.sub, creator_id=claims.user_id, name=name,
                    description=event["agent_description"], input_parameters=schema, alias=new)

        async with conn.transaction():
            # Keep the alias (the tool name) unless the name changed; build a new one from the
            # normalised name, never the raw one (D23).
            if alias_base(alias) == name:
                row = await activate(alias)
            else:
                row = await with_unique_alias(name, activate, "agents_alias_key")
            if row is None:
                return  # deleted meanwhile
            await reevaluate_flows(conn, claims.user_id)
    log.info("agent %s (%s) is active", agent_uuid, name)


async def on_unregister(bus: Bus, payload: dict[str, Any]) -> None:
    """A connection closed. Only our agents matter; anything else is ignored silently (§5.2, D24)."""
    event = _UNREGISTER_EVENTS.load(payload)
    agent_id = _as_uuid(event["agent_uuid"])
    if agent_id is None:
        return
    async with bus.pool.acquire() as conn, conn.transaction():
        row = await queries.deactivate_agent(conn, agent_id=agent_id)
        if row is not None and row["creator_id"] is not None:
            await reevaluate_flows(conn, row["creator_id"])
            log.info("agent %s is inactive", agent_id)


# `'api_key': '...'` (Python repr) or `"api_key": "..."` (JSON), possibly JSON-escaped once more.
_PLAIN = r"""(["'])KEY\1(\s*:\s*)(["'])(?:\\.|(?!\3)[^\\])*\3"""
_ESCAPED = r"""(\\+)(["'])KEY\1\2(\s*:\s*)\1\2.*?\1\2"""
REDACTED = "***"
# Credential values shorter than this are redacted only where they follow their key: replacing
# every "1" or "eu" in a log line would make it unreadable.
_MIN_REDACTED_VALUE = 4


def _redact_key(text: str, key: str) -> str:
    name = re.escape(key)
    text = re.sub(_PLAIN.replace("KEY", name), lambda m: f"{m[1]}{key}{m[1]}{m[2]}{m[3]}{REDACTED}{m[3]}", text)
    return re.sub(_ESCAPED.replace("KEY", name),
                  lambda m: f"{m[1]}{m[2]}{key}{m[1]}{m[2]}{m[3]}{m[1]}{m[2]}{REDACTED}{m[1]}{m[2]}", text)


def redact_api_keys(text: str) -> str:
    """D04: the master agent's library logs its invocation, provider API key included."""
    return _redact_key(text, "api_key")


def redact_credentials(text: str, credentials: list[tuple[str, str]]) -> str:
    """The API key and every model-config credential (key, value) of the owner, wherever it shows.

    The master agent logs the configuration it was sent, credentials merged in; a value is
    redacted after its key in any notation, and anywhere else as it is and JSON-escaped.
    """
    # Values first: a key's pattern stops at the first quote, which may be inside an escaped value.
    values = {value for _, value in credentials if len(value) >= _MIN_REDACTED_VALUE}
    for value in sorted(values, key=len, reverse=True):
        for spelling in {value, json.dumps(value)[1:-1], json.dumps(json.dumps(value))[3:-3]}:
            text = text.replace(spelling, REDACTED)
    for key in {key for key, _ in credentials}:
        if key and key in text:
            text = _redact_key(text, key)
    return redact_api_keys(text)


async def on_log(bus: Bus, payload: dict[str, Any]) -> None:
    """Store a log line with its owner and push it to the owner's sockets (§5.3, D04, D05)."""
    event = _LOG_EVENTS.load(payload)
    if not (event["session_id"] and event["request_id"] and event["log_level"]):
        return  # agents log with empty ids before their first request
    session_id, request_id = _as_uuid(event["session_id"]), _as_uuid(event["request_id"])
    if session_id is None or request_id is None:
        return
    message = event["log_message"]
    if not isinstance(message, str):
        message = json.dumps(message)
    # PostgreSQL text cannot hold NUL.
    message = message.replace("\x00", "\ufffd")
    sender: str = event["agent_uuid"]
    if sender == MASTER_SERVER_ML:
        credentials = [(r["key"], r["value"]) async for r in
                       queries.list_credentials_by_session(bus.pool, session_id=session_id)]
        message = redact_credentials(message, credentials)
    row = await queries.create_log(bus.pool, session_id=session_id, request_id=request_id, agent_id=sender,
                                   agent_uuid=_as_uuid(sender), message=message, log_level=event["log_level"])
    tracing.agent_log(str(request_id), sender, event["log_level"], message)
    # A step of a run in flight (HTTP or WebSocket): numbered with the run's other events.
    await queries.append_run_log(bus.pool, session_id=session_id, request_id=request_id,
                                 data=json.dumps(dict(row), default=str))
    owner = row["creator_id"]
    if owner is not None:
        # Awaited, so the pushes of a request are stored in the order its lines arrived; the
        # sockets (on every process) are served in the background, a slow browser holds up no one.
        await bus.sockets.push(owner, {"type": "agent_log", "log": dict(row)})


HANDLERS: dict[str, Handler] = {
    "agent_register": on_register,
    "agent_unregister": on_unregister,
    "agent_log": on_log,
}


def _decode(text: str) -> Any:
    # orjson refuses some valid JSON (integers over 64 bits); the stdlib fallback does not.
    return limits.loads(text, stdlib_fallback=True)


async def dispatch(bus: Bus, text: str) -> None:
    """Handle one router frame; a malformed or failing one is logged and skipped."""
    try:
        frame = _decode(text)
    except ValueError:
        log.warning("router sent a frame that is not JSON, skipped: %.200s", text)
        return
    payload = frame.get("request_payload") if isinstance(frame, dict) else None
    if not isinstance(payload, dict):
        if isinstance(frame, dict) and "error" in frame:
            log.info("router reported an error: %.500s", text)
        else:
            log.warning("router sent an unexpected frame, skipped: %.200s", text)
        return
    message_type = payload.get("message_type")
    handler = HANDLERS.get(message_type) if isinstance(message_type, str) else None
    if handler is None:
        log.warning("router event of unknown type %.100r skipped", message_type)
        return
    try:
        await handler(bus, payload)
    except ValidationError as exc:
        log.warning("malformed %s event skipped: %s", message_type, exc.messages)
    except Exception:
        log.exception("%s event failed", message_type)

