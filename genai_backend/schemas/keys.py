"""API key request and response schemas: create (name, scopes, optional lifetime or expiry), list, revoke."""
from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, fields

from genai_backend.auth.api_keys import DEFAULT_SCOPES, SCOPES
from genai_backend.schemas import Timestamp
from genai_backend.validation import Enum, FieldError, Int, List, ParsedField, RequestSchema, Str, Uuid, value_error

MIN_LIFETIME = 60
MAX_LIFETIME = 10 * 366 * 86400


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class FutureTimestamp(ParsedField, fields.String):
    """An ISO 8601 timestamp in the future; one with an offset is converted, one without is UTC."""

    def convert(self, raw: Any, source: str) -> dt.datetime:
        if not isinstance(raw, str):
            raise FieldError("datetime_type", "Input should be a valid datetime")
        try:
            value = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise FieldError("datetime_parsing", "Input should be a valid datetime, invalid format") from None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        if value <= _utc_now():
            raise FieldError("datetime_future", "Input should be in the future")
        return value


def _scopes_given(scopes: list[str]) -> None:
    if not scopes:
        raise ValueError("at least one scope is required")


class KeyCreateSchema(RequestSchema):
    forbid_extra = True

    name = Str(required=True, min_length=1, max_length=100, strip=True,
               metadata={"description": "to recognise the key by", "example": "nightly report job"})
    scopes = List(Enum(SCOPES), checks=[_scopes_given], load_default=lambda: list(DEFAULT_SCOPES), metadata={
        "description": "`chat`: run chats, read and manage conversations, their logs and files; `read`: read "
                       "everything you can read; `manage`: create, change and delete agents, flows, providers, "
                       "configs, MCP servers and A2A agents. Default `[\"chat\"]`."})
    expires_in = Int(ge=MIN_LIFETIME, le=MAX_LIFETIME, allow_none=True, load_default=None, metadata={
        "description": "lifetime in seconds (at least 60); or give `expires_at`; neither: the key never expires"})
    expires_at = FutureTimestamp(allow_none=True, load_default=None, metadata={
        "description": "expiry as ISO 8601 (UTC when it has no offset), in the future", "example": "2027-01-31T00:00:00Z"})

    def check(self, data: dict[str, Any]) -> None:
        if data["expires_in"] is not None and data["expires_at"] is not None:
            raise value_error("give expires_in or expires_at, not both")


class KeyPathSchema(RequestSchema):
    key_id = Uuid(required=True)


def expiry(data: dict[str, Any]) -> dt.datetime | None:
    if data["expires_in"] is not None:
        return _utc_now() + dt.timedelta(seconds=data["expires_in"])
    expires_at: dt.datetime | None = data["expires_at"]
    return expires_at


def canonical_scopes(scopes: list[str]) -> list[str]:
    """Each scope once, in the documented order."""
    return [scope for scope in SCOPES if scope in scopes]


# --- responses (documentation) ------------------------------------------------------------------

class KeySchema(Schema):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "the key's first characters, to recognise it"})
    scopes = fields.List(fields.String(metadata={"enum": list(SCOPES)}))
    expires_at = Timestamp(allow_none=True, metadata={"description": "UTC; null: never expires"})
    created_at = Timestamp()
    last_used_at = Timestamp(allow_none=True, metadata={
        "description": "UTC, updated at most once a minute; null: never used"})


class KeyCreatedSchema(KeySchema):
    key = fields.String(metadata={"description": "the key itself, shown this once only: only its hash is stored",
                                  "example": "gk_3q2-7wEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE0"})
