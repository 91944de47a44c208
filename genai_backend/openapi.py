"""The OpenAPI 3.0.3 document (aiohttp-apigami) and Swagger UI, with every response documented.

apigami documents what the handlers declare; the answers every protected or validated operation
can give (401, 422, the dual-mode 400) are added here once, so the document describes each
status a client can receive.
"""
from __future__ import annotations

import gzip
from typing import Any

from aiohttp import hdrs, web
from aiohttp_apigami import AiohttpApiSpec
from aiohttp_apigami.constants import SWAGGER_DICT

from genai_backend.limits import (
    MAX_FILE_NAME_LENGTH,
    MAX_JSON_BODY,
    MAX_JSON_DEPTH,
    MAX_KEY_LENGTH,
    MAX_PAGE_SIZE,
    MAX_TEXT_LENGTH,
    MAX_URL_LENGTH,
)
from genai_backend.responses import encode, encoded_json_response

LIMITS_DESCRIPTION = (
    "Limits (README §Limits); each is answered with a 4xx, never a 500:\n\n"
    f"* JSON bodies: at most {MAX_JSON_BODY} bytes (413), nested at most {MAX_JSON_DEPTH} levels deep (422 "
    "`json_invalid`); the same depth holds for WebSocket frames, router frames and remote MCP/A2A documents.\n"
    f"* Strings: usernames, provider, configuration and model names at most {MAX_KEY_LENGTH} characters, file "
    f"names {MAX_FILE_NAME_LENGTH}, server URLs {MAX_URL_LENGTH}, every other string {MAX_TEXT_LENGTH} (422 "
    "`string_too_long`).\n"
    f"* Lists: `limit` and `per_page` at most {MAX_PAGE_SIZE} (422 `less_than_equal`); integers that are not "
    "integers, or of thousands of digits, are 422 `int_parsing`.\n"
    "* Uploads: the file at most MAX_UPLOAD_BYTES, the whole multipart body at most 64 KiB more (413).\n"
    "* Request line and each header: at most 8190 bytes, at most 128 headers (431, or 400 for the request line)."
)
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


def _form_body(operation: dict[str, Any]) -> None:
    """Swagger 2.0's `in: formData` parameters (apigami's form location) as an OpenAPI 3 requestBody.

    Swagger UI sends nothing for `formData` under 3.0, so Try it out on the login form sent an
    empty body; as a urlencoded requestBody it sends the fields.
    """
    params = operation.get("parameters") or []
    form = [p for p in params if p.get("in") == "formData"]
    if not form:
        return
    operation["parameters"] = [p for p in params if p.get("in") != "formData"] or None
    if operation["parameters"] is None:
        del operation["parameters"]
    # A form field is absent or a string: a null default would be sent as the text "null".
    properties = {p["name"]: {k: v for k, v in p.get("schema", {}).items() if (k, v) != ("default", None)}
                  for p in form}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [p["name"] for p in form if p.get("required")]
    if required:
        schema["required"] = required
    operation["requestBody"] = {"required": bool(required),
                                "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _complete(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("HTTPError", _DETAIL)
    schemas.setdefault("HTTPValidationError", _VALIDATION)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            # apigami writes Swagger 2.0's `produces`; OpenAPI 3 says it per response `content`.
            operation.pop("produces", None)
            _form_body(operation)
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


OPENAPI_JSON = web.AppKey("openapi_json", bytes)
OPENAPI_GZIP = web.AppKey("openapi_gzip", bytes)


def _accepts_gzip(request: web.Request) -> bool:
    for coding in request.headers.get(hdrs.ACCEPT_ENCODING, "").split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() != "gzip":
            continue
        key, _, value = params.strip().partition("=")
        if key.strip() != "q":
            return True
        try:
            return float(value) > 0
        except ValueError:
            return False
    return False


async def _serve_document(request: web.Request) -> web.Response:
    # Built, encoded and compressed once at start-up: the document never changes while the app
    # runs. Compressed it is a tenth of the size, which is most of the cost of serving it.
    if _accepts_gzip(request):
        response = encoded_json_response(request.app[OPENAPI_GZIP], headers={hdrs.CONTENT_ENCODING: "gzip"})
    else:
        response = encoded_json_response(request.app[OPENAPI_JSON])
    response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    return response


def setup_openapi(app: web.Application) -> None:
    # Added before apigami's own /openapi.json (which re-encodes the document per request), so
    # this one answers; apigami's stays registered because its Swagger UI looks it up by name.
    app.router.add_get("/openapi.json", _serve_document)
    spec = AiohttpApiSpec(url="/openapi.json", swagger_path="/docs", openapi_version="3.0.3",
                          title="GenAI AgentOS back-end", version="1.0.0", in_place=True,
                          info={"description": LIMITS_DESCRIPTION})
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
    app[OPENAPI_JSON] = encode(app[SWAGGER_DICT])
    app[OPENAPI_GZIP] = gzip.compress(app[OPENAPI_JSON], compresslevel=9, mtime=0)
