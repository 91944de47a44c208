"""File schemas (rest-api #39-#43); FileDTO has exactly nine keys."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.validation import Int, RequestSchema, Uuid, page_size


class FilePathSchema(RequestSchema):
    file_id = Uuid(required=True)


class SessionFilesQuerySchema(RequestSchema):
    session_id = Uuid(required=True)
    user_id = Uuid(metadata={"description": "master-agent mode only, with X-API-KEY"})


class FileListQuerySchema(RequestSchema):
    limit = page_size("items per page")
    offset = Int(ge=0, load_default=0)


class FileCreatedSchema(Schema):
    id = fields.UUID()


class FileSchema(Schema):
    id = fields.UUID()
    session_id = fields.UUID(allow_none=True)
    request_id = fields.UUID(allow_none=True)
    original_name = fields.String(metadata={"description": "the upload's file name exactly as sent"})
    mimetype = fields.String()
    internal_id = fields.UUID()
    internal_name = fields.String(metadata={"description": "<id><suffix>, the name on disk"})
    from_agent = fields.Boolean()
    creator_id = fields.UUID()


class SessionFileSchema(Schema):
    file_id = fields.UUID()
    session_id = fields.UUID()
    request_id = fields.UUID(allow_none=True)
