"""Schemas of the events the router forwards to the back-end (agent-bus.md §5).

Each handler loads its payload with one of these; a ValidationError means "log and skip".
"""
from __future__ import annotations

from typing import Any

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate, validates

from genai_backend.limits import MAX_TEXT_LENGTH

# What an agent may announce over the bus: as much as a REST registration could carry (the
# JSON body limit), so nothing reaches the database that the REST API would refuse.
MAX_ANNOUNCED_BYTES = 1024 * 1024
MAX_ID_LENGTH = 1024
MAX_LEVEL_LENGTH = 64


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed")


class EventSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    message_type = fields.String(required=True)
    # The router client id of the sender: an agent uuid, `master_server_ml`, an invoke key...
    agent_uuid = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID_LENGTH))


class RegisterEventSchema(EventSchema):
    agent_jwt = fields.String(load_default=None, allow_none=True)
    agent_name = fields.String(load_default="", allow_none=True)
    agent_description = fields.String(load_default="", allow_none=True)
    agent_input_schema = fields.Raw(load_default=None, allow_none=True)

    @pre_load
    def _nulls_are_empty(self, data: Any, **_: Any) -> Any:
        # The library sends whatever `bind()` produced; None means "nothing announced".
        if isinstance(data, dict):
            data = dict(data)
            for key in ("agent_name", "agent_description"):
                if data.get(key) is None:
                    data[key] = ""
        return data

    @validates("agent_name")
    def _check_name(self, value: str, **_: Any) -> None:
        # The 55-character rule is answered to the agent by the handler; this only guards storage.
        _no_nul(value)
        if len(value) > MAX_ANNOUNCED_BYTES:
            raise ValidationError("too long")

    @validates("agent_description")
    def _check_description(self, value: str, **_: Any) -> None:
        _no_nul(value)
        # The REST registration's bound on a description (README §Limits), in characters.
        if len(value) > MAX_TEXT_LENGTH or len(value.encode()) > MAX_ANNOUNCED_BYTES:
            raise ValidationError("too long")

    @validates("agent_input_schema")
    def _check_schema(self, value: Any, **_: Any) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object")
        encoded = orjson.dumps(value)
        if len(encoded) > MAX_ANNOUNCED_BYTES:
            raise ValidationError("too large")
        if b"\\u0000" in encoded:
            raise ValidationError("NUL characters are not allowed")


class UnregisterEventSchema(EventSchema):
    pass


class LogEventSchema(EventSchema):
    # Agents send empty ids before their first request; the handler ignores those.
    session_id = fields.String(load_default="", allow_none=True)
    request_id = fields.String(load_default="", allow_none=True)
    log_level = fields.String(load_default="", allow_none=True,
                              validate=[validate.Length(max=MAX_LEVEL_LENGTH), _no_nul])
    # Text; anything else is stored as its JSON encoding.
    log_message = fields.Raw(load_default="", allow_none=True)
