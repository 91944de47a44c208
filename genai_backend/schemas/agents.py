"""Agent request and response schemas (rest-api #6-#11)."""
from __future__ import annotations

import uuid
from typing import Any

from marshmallow import Schema, fields

from genai_backend.errors import BadRequestError
from genai_backend.naming import check_name_length
from genai_backend.schemas import Timestamp
from genai_backend.validation import (
    Bool,
    Enum,
    FieldError,
    Int,
    JsonObject,
    Raw,
    RequestSchema,
    Str,
    Uuid,
    page_size,
    parse_uuid,
)

# Str refuses NUL (PostgreSQL text cannot hold it); JSON documents are checked here, because
# jsonb (used by the listings) cannot hold it either.
NUL = "\x00"
# asyncpg sends offsets and limits as bigint; anything larger means "all" anyway.
BIGINT_MAX = 2**63 - 1


def contains_nul(value: Any) -> bool:
    """True if any string (key or value) inside a decoded JSON document contains NUL."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(NUL in k or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def _no_nul_json(value: Any) -> None:
    if contains_nul(value):
        raise ValueError("input_parameters must not contain NUL characters")


def _agent_name(value: str) -> None:
    check_name_length(value, "Agent")


class AgentIdField(Raw):
    """The optional client-chosen id; its 400s win over any 422 of other fields (rest-api #6)."""

    def convert(self, raw: Any, source: str) -> uuid.UUID:
        if raw is None:
            raise BadRequestError("Parameter 'id' must not be a null")
        try:
            return parse_uuid(raw)
        except FieldError:
            raise BadRequestError("Parameter 'id' must be a valid uuid") from None


class InputParameters(JsonObject):
    """An object or a JSON-object string (D14), free of NUL characters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_checks([_no_nul_json])


class AgentCreateSchema(RequestSchema):
    name = Str(required=True, checks=[_agent_name])
    description = Str(required=True)
    id = AgentIdField()
    input_parameters = InputParameters(required=True)


class AgentUpdateSchema(RequestSchema):
    name = Str(required=True, checks=[_agent_name])
    description = Str(required=True)
    input_parameters = InputParameters(required=True)


class AgentPathSchema(RequestSchema):
    agent_id = Uuid(required=True)


class AgentListQuerySchema(RequestSchema):
    offset = Int(ge=0, load_default=0)
    limit = page_size("items per page")
    name = Str()
    description = Str()


class FrontendQuerySchema(RequestSchema):
    is_active = Bool(metadata={"description": "true/True/1: only connected agents; false: only the others"})


AGENT_TYPES = ("genai", "mcp", "a2a", "all")


class ActiveQuerySchema(RequestSchema):
    agent_type = Enum(AGENT_TYPES, required=True)
    user_id = Uuid()
    offset = Int(ge=0, load_default=0)
    limit = page_size("items per page")


# --- responses (documentation) ------------------------------------------------------------------

class AgentRegisteredSchema(Schema):
    name = fields.String()
    description = fields.String()
    id = fields.UUID()
    input_parameters = fields.Dict()
    created_at = Timestamp()
    updated_at = Timestamp()
    alias = fields.String()
    jwt = fields.String()


class AgentItemSchema(Schema):
    agent_id = fields.UUID()
    agent_name = fields.String()
    agent_description = fields.String()
    agent_schema = fields.Dict()
    created_at = Timestamp()
    updated_at = Timestamp()
    is_active = fields.Boolean()
    agent_jwt = fields.String()
    agent_alias = fields.String()


class ActiveItemSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    type = fields.String(metadata={"enum": ["genai", "flow", "mcp", "a2a"]})
    url = fields.String(metadata={"description": "mcp and a2a only"})
    agent_schema = fields.Dict()
    flow = fields.List(fields.UUID(), metadata={"description": "flow only"})
    created_at = Timestamp()
    updated_at = Timestamp()
    is_active = fields.Boolean()


class ActiveListSchema(Schema):
    count_active_connections = fields.Integer()
    active_connections = fields.List(fields.Nested(ActiveItemSchema))


def clamp(value: int) -> int:
    return min(value, BIGINT_MAX)

