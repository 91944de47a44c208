"""The OpenAPI 3.0.3 document (aiohttp-apigami) and Swagger UI, with every response documented.

apigami documents what the handlers declare; the answers every protected or validated operation
can give (401, 422, the dual-mode 400) are added here once, so the document describes each
status a client can receive.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import AiohttpApiSpec
from aiohttp_apigami.constants import SWAGGER_DICT

OAUTH2 = "OAuth2PasswordBearer"
API_KEY = "APIKeyHeader"
GK_KEY = "APIKeyBearer"

_DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
_VALIDATION = {
    "type": "object",
    "properties": {"detail": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
            "input": {},
            "ctx": {"type": "object"},
        },
        "required": ["type", "loc", "msg", "input"],
    }}},
    "required": ["detail"],
}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _complete(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("HTTPError", _DETAIL)
    schemas.setdefault("HTTPValidationError", _VALIDATION)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            security = operation.get("security") or []
            if security:
                responses.setdefault("401", _json("HTTPError", "Missing, invalid or expired credentials"))
            if any(GK_KEY in s for s in security):
                responses.setdefault("403", _json("HTTPError", "The API key lacks a scope this operation needs"))
            if any(API_KEY in s for s in security):
                responses.setdefault("400", _json("HTTPError", "Ambiguous or invalid credentials"))
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("422", _json("HTTPValidationError", "Invalid input"))
            if operation.get("requestBody"):
                responses.setdefault("413", _json("HTTPError", "Request body too large"))
                if "multipart/form-data" in operation["requestBody"].get("content", {}):
                    responses.setdefault("400", _json("HTTPError", "Malformed multipart body"))


def setup_openapi(app: web.Application) -> None:
    spec = AiohttpApiSpec(url="/openapi.json", swagger_path="/docs", openapi_version="3.0.3",
                          title="GenAI AgentOS back-end", version="1.0.0", in_place=True)
    spec.spec.components.security_scheme(OAUTH2, {
        "type": "oauth2", "flows": {"password": {"tokenUrl": "/api/login/access-token", "scopes": {}}}})
    spec.spec.components.security_scheme(API_KEY, {"type": "apiKey", "in": "header", "name": "X-API-KEY"})
    spec.spec.components.security_scheme(GK_KEY, {
        "type": "http", "scheme": "bearer", "bearerFormat": "gk_…",
        "description": "An API key from POST /api/keys, as `Authorization: Bearer gk_…`. It acts as its user "
                       "within its scopes; `x-api-key-scopes` on an operation lists the scopes it accepts "
                       "(any one)."})
    spec.register(app, in_place=True)
    _complete(app[SWAGGER_DICT])
