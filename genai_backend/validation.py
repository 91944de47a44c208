"""Request validation with FastAPI/pydantic-shaped 422 bodies (errors.md §2).

The middleware reads the schemas that apigami's decorators attached to the handler, parses every
location (path, query, header, body, in that order) with the fields of `genai_backend.fields`,
and reports all errors together.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp_apigami import request_schema
from aiohttp_apigami.constants import SCHEMAS_ATTR
from aiohttp_apigami.utils import is_class_based_view
from marshmallow import Schema
from marshmallow.utils import missing as MISSING

from genai_backend import limits
from genai_backend.errors import BadRequestError, ValidationFailed

# Re-exported: request schemas and handlers take their fields and errors from here.
from genai_backend.fields import (  # noqa: F401
    Bool,
    Dict,
    Enum,
    Float,
    Int,
    JsonObject,
    List,
    Nested,
    ParsedField,
    Raw,
    RequestSchema,
    Str,
    Uuid,
    page_size,
    parse_fields,
)
from genai_backend.parsing import (  # noqa: F401
    FieldError,
    FieldErrors,
    error,
    parse_int_string,
    parse_uuid,
    uuid_error_text,
    value_error,
)

T = TypeVar("T")

# apigami location -> the first element of pydantic's `loc`.
_SOURCES = {"match_info": "path", "path": "path", "querystring": "query", "query": "query",
            "headers": "header", "json": "body", "form": "body"}
_ORDER = {"path": 0, "query": 1, "header": 2, "body": 3}
MALFORMED_BODY = "There was an error parsing the body"


def _scalar_parse(schema: Schema, data: Mapping[str, str], source: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        if key not in data:
            if field.required:
                errors.append(error("missing", (source, key), "Field required", None))
            elif field.load_default is not MISSING:
                default = field.load_default
                out[name] = default() if callable(default) else default
            continue
        raw = data[key]
        assert isinstance(field, ParsedField)
        try:
            out[name] = field.parse(raw, source)
        except FieldError as exc:
            errors.append(error(exc.type, (source, key, *exc.loc), exc.msg, raw if exc.input is MISSING else exc.input, exc.ctx))
    return out, errors


async def _read_json_body(request: web.Request) -> tuple[Any, dict[str, Any] | None]:
    """The decoded body, or an error; mirrors how FastAPI decides what a JSON body is."""
    raw = await request.read()
    if not raw:
        return MISSING, None
    content_type = request.headers.get("Content-Type")
    if content_type:
        main = request.content_type
        if not (main == "application/json" or (main.startswith("application/") and main.endswith("+json"))):
            # FastAPI hands non-JSON bodies to pydantic as bytes: "not an object".
            text = raw.decode("utf-8", "replace")
            return MISSING, error("model_attributes_type", ("body",),
                                  "Input should be a valid dictionary or object to extract fields from", text)
    try:
        return limits.loads(raw), None
    except limits.JsonTooDeep as exc:
        return MISSING, error("json_invalid", ("body", exc.pos), "JSON decode error", {}, {"error": str(exc)})
    except ValueError as strict:
        # orjson decides what is acceptable (it refuses lone surrogates and NaN, which PostgreSQL
        # could not store anyway); Python's decoder only supplies the reference's message and position.
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            return MISSING, error("json_invalid", ("body", exc.pos), "JSON decode error", {}, {"error": exc.msg})
        except ValueError:
            # Not valid UTF-8, or an integer of thousands of digits: orjson's reason will do.
            pass
        return MISSING, error("json_invalid", ("body", 0), "JSON decode error", {}, {"error": str(strict)})


async def _parse_body(request: web.Request, schema: Schema, location: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    if location == "form":
        form: Mapping[str, Any] = {}
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except (ValueError, AssertionError, HttpProcessingError):
                # No boundary, a garbage body, undecodable part headers: Starlette's answer.
                raise BadRequestError(MALFORMED_BODY) from None
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        out, errs = parse_fields(schema, data, whole=None, missing_input=None)
    else:
        body, err = await _read_json_body(request)
        if err is not None:
            return {}, [err]
        if body is MISSING:
            return {}, [error("missing", ("body",), "Field required", None)]
        if not isinstance(body, dict):
            return {}, [error("model_attributes_type", ("body",),
                              "Input should be a valid dictionary or object to extract fields from", body)]
        out, errs = parse_fields(schema, body, whole=body)
    for e in errs:
        errors.append(error(e.type, ("body", *e.loc), e.msg, e.input, e.ctx))
    return out, errors


def endpoint(request: web.Request) -> Any:
    """The function that answers this request: a view's method, or the plain handler."""
    handler = request.match_info.handler
    if is_class_based_view(handler):
        return getattr(handler, request.method.lower(), None)
    return handler


def handler_schemas(request: web.Request) -> list[Any]:
    return list(getattr(endpoint(request), SCHEMAS_ATTR, None) or ())


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    schemas = handler_schemas(request)
    if not schemas:
        return await handler(request)
    errors: list[tuple[int, list[dict[str, Any]]]] = []
    for item in schemas:
        source = _SOURCES[item.location]
        if source == "path":
            out, errs = _scalar_parse(item.schema, request.match_info, source)
        elif source == "query":
            out, errs = _scalar_parse(item.schema, request.query, source)
        elif source == "header":
            out, errs = _scalar_parse(item.schema, request.headers, source)
        else:
            out, errs = await _parse_body(request, item.schema, item.location)
        request[item.put_into] = out
        if errs:
            errors.append((_ORDER[source], errs))
    if errors:
        errors.sort(key=lambda pair: pair[0])
        raise ValidationFailed([e for _, errs in errors for e in errs])
    return await handler(request)


# --- decorators: document with apigami, validate with the middleware above ----------------------

def path(schema: type[Schema]) -> Callable[[T], T]:
    return cast(Callable[[T], T], request_schema(schema(), location="match_info", put_into="path"))


def query(schema: type[Schema]) -> Callable[[T], T]:
    return cast(Callable[[T], T], request_schema(schema(), location="querystring", put_into="query"))


def body(schema: type[Schema]) -> Callable[[T], T]:
    return cast(Callable[[T], T], request_schema(schema(), location="json", put_into="body"))


def form(schema: type[Schema]) -> Callable[[T], T]:
    return cast(Callable[[T], T], request_schema(schema(), location="form", put_into="form"))
