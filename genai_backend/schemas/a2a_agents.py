"""A2A agent request and response schemas (rest-api #35-#38); the card itself is in a2a_cards."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.schemas import Timestamp
from genai_backend.schemas.mcp_servers import ServerUrl
from genai_backend.validation import RequestSchema, Uuid


class A2AAgentCreateSchema(RequestSchema):
    server_url = ServerUrl(required=True, metadata={"example": "http://127.0.0.1:10102"})


class A2AAgentPathSchema(RequestSchema):
    agent_id = Uuid(required=True)


# --- responses (documentation) ------------------------------------------------------------------

class A2AAgentRegisteredSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    alias = fields.String(metadata={"description": "`<name>_<6 a-z>`, the name the master agent calls"})
    description = fields.String()
    server_url = fields.String(metadata={"description": "the origin the card was fetched from"})
    card_content = fields.Dict(metadata={"description": "the card without name, description, url and nulls"})
    created_at = Timestamp()
    updated_at = Timestamp()
    endpoint_url = fields.String(allow_none=True, metadata={
        "description": "where the agent is called: the card's first `supportedInterfaces` url (1.0), else its `url`"})
    protocol_version = fields.String(allow_none=True, metadata={
        "description": "A2A version the card declares (`1.0`, `0.3.0`, `0.2.5`, ...); null if it declares none"})
    transport = fields.String(allow_none=True, metadata={"description": "`JSONRPC`, `GRPC` or `HTTP+JSON`"})


class A2AAgentSchema(A2AAgentRegisteredSchema):
    is_active = fields.Boolean()
    creator_id = fields.UUID()
