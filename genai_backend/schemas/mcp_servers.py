"""MCP server request and response schemas (rest-api #31-#34), and the http(s) URL field."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from marshmallow import Schema, fields

from genai_backend.auth import secrets
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


MAX_HEADERS = 20
MAX_HEADER_VALUE = 8192
# Values are never shown again: listings show the names with this instead.
MASK = "********"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
# The MCP client sets these itself; a user's value would break the transport, not authenticate.
_RESERVED = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection", "upgrade",
                       "accept", "te", "trailer", "keep-alive", "mcp-session-id", "mcp-protocol-version",
                       "last-event-id"})


class McpHeaders(ParsedField, fields.Dict):
    """Request headers sent to the server with every MCP request (credentials): a flat object of strings.

    Errors never echo the values back (`input` is masked): they are secrets.
    """

    def convert(self, raw: Any, source: str) -> dict[str, str]:
        if not isinstance(raw, dict):
            raise FieldError("dict_type", "Input should be a valid dictionary", input=_masked(raw))
        if len(raw) > MAX_HEADERS:
            raise FieldError("value_error", f"Value error, at most {MAX_HEADERS} headers", input=_masked(raw))
        seen: set[str] = set()
        for name, value in raw.items():
            if not _TOKEN.fullmatch(name) or name.lower() in _RESERVED or name.lower() in seen:
                raise FieldError("value_error", f"Value error, {name[:256]!r} is not a header name the service may set",
                                 input=_masked(raw))
            seen.add(name.lower())
            if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or not _VALUE.fullmatch(value):
                raise FieldError("value_error", f"Value error, the value of {name!r} must be a string of at most "
                                 f"{MAX_HEADER_VALUE} printable characters", input=_masked(raw))
        return dict(raw)


def _masked(raw: Any) -> Any:
    return {str(name): MASK for name in raw} if isinstance(raw, dict) else MASK


def masked_headers(names: Any) -> dict[str, str]:
    """What responses show of a server's stored headers: the names, never the values."""
    return {str(name): MASK for name in names} if isinstance(names, list) else {}


async def open_headers(sealed: str | None, keys: secrets.Keys) -> dict[str, str]:
    """Stored (encrypted) request headers as a dict, {} when none are stored; InvalidCiphertext if no key opens them."""
    if sealed is None:
        return {}
    headers: dict[str, str] = orjson.loads(await secrets.decrypt(sealed, keys))
    return headers


class McpServerCreateSchema(RequestSchema):
    server_url = ServerUrl(required=True, metadata={"example": "http://127.0.0.1:8988/mcp"})
    headers = McpHeaders(metadata={
        "description": "optional request headers (e.g. Authorization), stored encrypted, never shown again",
        "example": {"Authorization": "Bearer <token>"}})


class McpServerUpdateSchema(RequestSchema):
    headers = McpHeaders(required=True, allow_none=True, metadata={
        "description": "replaces the stored headers; null or {} removes them. Checked against the server first"})


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
    headers = fields.Dict(metadata={"description": "names of the stored request headers, values masked"})
    unavailable_reason = fields.String(allow_none=True, metadata={
        "description": "why the last lookup failed (e.g. `the server answered 401 Unauthorized`); null when up"})


class McpServerRegisteredSchema(Schema):
    server_url = fields.String()
    mcp_tools = fields.List(fields.Dict(), metadata={"description": "each tool as the master agent sees it"})
    is_active = fields.Boolean()
    created_at = Timestamp()
    updated_at = Timestamp()
