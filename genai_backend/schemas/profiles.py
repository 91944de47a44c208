"""User profile schemas."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.validation import RequestSchema, Str, Uuid


class ProfilePathSchema(RequestSchema):
    user_id = Uuid(required=True)


class ProfileUpdateSchema(RequestSchema):
    first_name = Str(allow_none=True, max_length=255)
    last_name = Str(allow_none=True, max_length=255)


class ProfileSchema(Schema):
    id = fields.UUID()
    user_id = fields.UUID()
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
