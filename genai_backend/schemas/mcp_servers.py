"""MCP server request and response schemas (rest-api #31-#34), and the http(s) URL field."""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from marshmallow import Schema, fields

from genai_backend.discovery.mcp import McpTool
from genai_backend.discovery.urls import UrlError, normalise_url
from genai_backend.limits import MAX_URL_LENGTH
from genai_backend.naming import new_alias
from genai_backend.schemas import Timestamp
from genai_backend.validation import FieldError, Int, ParsedField, RequestSchema, Uuid, page_size


class ServerUrl(ParsedField, fields.Url):
    """An http(s) URL, answered and normalised like pydantic's AnyHttpUrl (422 url_type/url_parsing/url_scheme)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"maxLength": MAX_URL_LENGTH, **kwargs.pop("metadata", {})}, **kwargs)

    def convert(self, raw: Any, source: str) -> str:
        if not isinstance(raw, str):
            raise FieldError("url_type", "URL input should be a string or URL")
        try:
            url = normalise_url(raw)
        except UrlError as exc:
            raise FieldError(exc.type, exc.msg, exc.ctx) from None
        # Checked on the stored (normalised) form: that is what the unique index holds.
        if len(url) > MAX_URL_LENGTH:
            raise FieldError("string_too_long", f"String should have at most {MAX_URL_LENGTH} characters",
                             {"max_length": MAX_URL_LENGTH})
        return url


class McpServerCreateSchema(RequestSchema):
    server_url = ServerUrl(required=True, metadata={"example": "http://127.0.0.1:8988/mcp"})


class McpServerPathSchema(RequestSchema):
    server_id = Uuid(required=True)


class McpServerListQuerySchema(RequestSchema):
    limit = page_size("items per page")
    offset = Int(ge=0, load_default=0)


def tool_rows(tools: Iterable[McpTool]) -> list[dict[str, Any]]:
    """`sync_mcp_tools`' input: one row per tool name (first wins), with an id and alias for new names.

    Ids are drawn, then sorted, so that (created_at, id) lists tools in the server's own order.
    """
    unique: dict[str, McpTool] = {}
    for tool in tools:
        unique.setdefault(tool.name, tool)
    ids = sorted(uuid.uuid4() for _ in unique)
    return [{"id": str(tool_id), "name": tool.name, "description": tool.description,
             "input_schema": tool.input_schema, "annotations": tool.annotations, "alias": new_alias(tool.name)}
            for tool_id, tool in zip(ids, unique.values())]


# --- responses (documentation) ------------------------------------------------------------------

class McpToolSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    description = fields.String(allow_none=True)
    inputSchema = fields.Dict()
    annotations = fields.Dict(allow_none=True)
    alias = fields.String(metadata={"description": "`<name>_<6 a-z>`, the name the master agent calls"})
    mcp_server_id = fields.UUID()
    created_at = Timestamp()
    updated_at = Timestamp()


class McpServerSchema(Schema):
    id = fields.UUID()
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    server_url = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()
    creator_id = fields.UUID()
    is_active = fields.Boolean()
    mcp_tools = fields.List(fields.Nested(McpToolSchema))


class McpServerRegisteredSchema(Schema):
    server_url = fields.String()
    mcp_tools = fields.List(fields.Dict(), metadata={"description": "each tool as the master agent sees it"})
    is_active = fields.Boolean()
    created_at = Timestamp()
    updated_at = Timestamp()
