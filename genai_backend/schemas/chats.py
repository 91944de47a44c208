"""Conversation and chat-message schemas (rest-api #26-#30) and the front-end's chat frame (websocket.md §2)."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.schemas import Timestamp
from genai_backend.validation import Int, List, RequestSchema, Str, Uuid, page_size

MAX_TITLE = 20


def _title_rules(value: str) -> None:
    if not value:
        raise ValueError("Chat title must not be empty")
    if len(value) > MAX_TITLE:
        raise ValueError(f"Chat title must not be longer than {MAX_TITLE} symbols")


# --- requests ------------------------------------------------------------------------------------

class ChatListQuerySchema(RequestSchema):
    offset = Int(ge=0, load_default=0)
    limit = page_size("items per page")


class ChatCreateSchema(RequestSchema):
    title = Str(required=True, checks=[_title_rules])
    session_id = Uuid(required=True)


class ChatTitleSchema(RequestSchema):
    title = Str(required=True, checks=[_title_rules])


class ChatSessionQuerySchema(RequestSchema):
    session_id = Uuid(required=True)


class ChatHistoryQuerySchema(RequestSchema):
    session_id = Uuid(required=True)
    user_id = Uuid(metadata={"description": "master-agent mode only, with X-API-KEY"})
    page = Int(ge=1, load_default=1)
    per_page = page_size("messages per page")


class ChatFrameSchema(RequestSchema):
    """One message from the chat UI; extra keys are ignored."""

    message = Str(required=True)
    provider = Str(required=True)
    llm_name = Str(required=True)
    files = List(Str(), load_default=list)
    request_id = Uuid(load_default=None, metadata={"description": "optional: makes a retried send safe"})


# --- responses -----------------------------------------------------------------------------------

class ChatSchema(Schema):
    session_id = fields.UUID()
    title = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()


class ChatListSchema(Schema):
    chats = fields.List(fields.Nested(ChatSchema))


class ChatRowSchema(ChatSchema):
    creator_id = fields.UUID()


class ChatMessageSchema(Schema):
    sender_type = fields.String(metadata={"enum": ["user", "master_agent"]})
    content = fields.String(metadata={"description": "user text, or the JSON-encoded master-agent answer"})
    request_id = fields.UUID()
    created_at = Timestamp()


class ChatHistorySchema(Schema):
    total_count = fields.Integer()
    next_page = fields.String(allow_none=True)
    previous_page = fields.String(allow_none=True)
    items = fields.List(fields.Nested(ChatMessageSchema))
