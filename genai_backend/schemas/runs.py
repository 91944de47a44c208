"""Chat runs over HTTP: the message sent, the paths, a run's state."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.schemas import Timestamp
from genai_backend.validation import List, RequestSchema, Str, Uuid


class SessionPathSchema(RequestSchema):
    session_id = Uuid(required=True)


class RunPathSchema(RequestSchema):
    session_id = Uuid(required=True)
    request_id = Uuid(required=True)


class MessageSchema(RequestSchema):
    """The WebSocket's chat frame (websocket.md §2) as a request body."""

    message = Str(required=True)
    provider = Str(required=True)
    llm_name = Str(required=True)
    files = List(Str(), load_default=list)
    request_id = Uuid(load_default=None, metadata={
        "description": "your id for this send (or an `Idempotency-Key` header): a retry with it is safe"})


class RunSchema(Schema):
    request_id = fields.UUID()
    session_id = fields.UUID()
    state = fields.String(metadata={"enum": ["running", "completed", "failed", "cancelled"]})
    answer = fields.Dict(allow_none=True, metadata={
        "description": "the WebSocket's answer object once completed or cancelled; `{detail, reason}` once failed"})
    created_at = Timestamp()
    finished_at = Timestamp(allow_none=True)


class AnswerSchema(Schema):
    type = fields.String(metadata={"enum": ["agent_response"]})
    response = fields.Dict(metadata={"description": "execution_time, response, request_id, session_id, files"})
