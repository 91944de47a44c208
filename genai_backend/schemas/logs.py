"""Agent log schemas (rest-api #17)."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.schemas import Timestamp
from genai_backend.validation import RequestSchema, Uuid


class LogQuerySchema(RequestSchema):
    request_id = Uuid()
    session_id = Uuid()


class LogSchema(Schema):
    session_id = fields.UUID()
    request_id = fields.UUID()
    log_level = fields.String()
    message = fields.String()
    creator_id = fields.UUID(allow_none=True)
    agent_id = fields.String(allow_none=True, metadata={"description": "router client id of the sender"})
    created_at = Timestamp()
    updated_at = Timestamp()
