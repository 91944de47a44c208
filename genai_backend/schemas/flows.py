"""Agent flow request and response schemas (rest-api #12-#16)."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from genai_backend.errors import BadRequestError
from genai_backend.naming import check_name_length
from genai_backend.schemas import Timestamp
from genai_backend.validation import FieldError, Int, List, Nested, Raw, RequestSchema, Str, Uuid, page_size, parse_uuid

FLOW_TYPES = ("genai", "mcp", "a2a")


class ElementIdField(Raw):
    """A string (else 422), and a uuid (else a 400 that ends validation at once)."""

    def convert(self, raw: Any, source: str) -> str:
        if not isinstance(raw, str):
            raise FieldError("string_type", "Input should be a valid string")
        try:
            # Stored canonical, so the database compares ids as uuids.
            return str(parse_uuid(raw))
        except FieldError:
            raise BadRequestError("Agent ID is not a valid UUID") from None


class ElementTypeField(Raw):
    def convert(self, raw: Any, source: str) -> str:
        if raw not in FLOW_TYPES:
            raise BadRequestError("Agent type must be one of 'genai', 'mcp', or 'a2a'")
        return str(raw)


class FlowElementSchema(RequestSchema):
    id = ElementIdField()
    type = ElementTypeField()


def _flow_name(value: str) -> None:
    check_name_length(value, "Flow")


def _several(value: list[Any]) -> None:
    if len(value) <= 1:
        raise ValueError("Agentflow must contain more than 1 agent")


class FlowBodySchema(RequestSchema):
    name = Str(required=True, checks=[_flow_name])
    description = Str(required=True)
    flow = List(Nested(FlowElementSchema), required=True, checks=[_several])

    def check(self, data: dict[str, Any]) -> None:
        if data["name"] == "":
            raise BadRequestError("'name' parameter must not be empty string")
        if data["description"] == "":
            raise BadRequestError("'description' parameter must not be empty string")


class FlowPathSchema(RequestSchema):
    agentflow_id = Uuid(required=True)


class FlowListQuerySchema(RequestSchema):
    offset = Int(ge=0, load_default=0)
    limit = page_size("items per page")


# --- responses (documentation) ------------------------------------------------------------------

class FlowElementOutSchema(Schema):
    id = fields.UUID()
    type = fields.String(metadata={"enum": list(FLOW_TYPES)})


class FlowObjectSchema(Schema):
    name = fields.String()
    description = fields.String()
    flow = fields.List(fields.Nested(FlowElementOutSchema))
    created_at = Timestamp()
    updated_at = Timestamp()
    id = fields.UUID()
    is_active = fields.Boolean(metadata={"description": "every element active and yours, right now"})


class FlowRowSchema(FlowObjectSchema):
    creator_id = fields.UUID()
    alias = fields.String()
