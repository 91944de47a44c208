"""Request validation with FastAPI/pydantic-shaped 422 bodies (errors.md §2).

Schemas are ordinary marshmallow schemas, so aiohttp-apigami documents them, but their fields are
the subclasses below: each knows how to parse a raw value and which pydantic error it produces.
The middleware reads the schemas that apigami's decorators attached to the handler, parses every
location (path, query, header, body, in that order), and reports all errors together.
"""
from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami import request_schema
from aiohttp_apigami.constants import SCHEMAS_ATTR
from aiohttp_apigami.utils import is_class_based_view
from marshmallow import Schema, fields
from marshmallow.utils import missing as MISSING

from genai_backend.errors import ValidationFailed

T = TypeVar("T")
Check = Callable[[Any], None]

# apigami location -> the first element of pydantic's `loc`.
_SOURCES = {"match_info": "path", "path": "path", "querystring": "query", "query": "query",
            "headers": "header", "json": "body", "form": "body"}
_ORDER = {"path": 0, "query": 1, "header": 2, "body": 3}


class FieldError(Exception):
    """One pydantic-style error; `loc` is relative to the field, `input` defaults to the raw value."""

    def __init__(self, type_: str, msg: str, ctx: dict[str, Any] | None = None,
                 loc: tuple[str | int, ...] = (), input: Any = MISSING) -> None:
        super().__init__(msg)
        self.type = type_
        self.msg = msg
        self.ctx = ctx
        self.loc = loc
        self.input = input


def error(type_: str, loc: Iterable[str | int], msg: str, input: Any, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "loc": list(loc), "msg": msg, "input": input}
    if ctx is not None:
        body["ctx"] = ctx
    return body


def value_error(message: str) -> FieldError:
    """A custom rule failed: pydantic prefixes `Value error, ` and carries an empty ctx error."""
    return FieldError("value_error", f"Value error, {message}", {"error": {}})


# --- scalar parsing with pydantic-core's texts ------------------------------------------------

_UUID_CHAR = "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `{}` at {}"
_HEX = set("0123456789abcdefABCDEF")


def uuid_error_text(raw: str) -> str:
    """The error the Rust `uuid` crate gives for `raw` (errors.md §2.3); only called on failure."""
    s, offset, simple = raw, 0, True
    if len(s) >= 2 and s.startswith("{") and s.endswith("}"):
        s, offset, simple = s[1:-1], 1, False
    elif s.startswith("urn:uuid:"):
        s, offset, simple = s[9:], 9, False
    hyphens: list[int] = []
    i = 0
    for ch in s:
        if ch == "-":
            hyphens.append(i)
        elif ch not in _HEX:
            return _UUID_CHAR.format(ch, i + offset + 1)
        i += len(ch.encode())
    if not hyphens and simple:
        return f"invalid length: expected length 32 for simple format, found {len(raw)}"
    if len(hyphens) != 4:
        return f"invalid group count: expected 5, found {len(hyphens) + 1}"
    starts = (0, 9, 14, 19, 24)
    expected = (8, 4, 4, 4)
    for g in range(4):
        if hyphens[g] != starts[g + 1] - 1:
            return f"invalid group length in group {g}: expected {expected[g]}, found {hyphens[g] - starts[g]}"
    return f"invalid group length in group 4: expected 12, found {len(s) - 24}"


def parse_uuid(raw: Any, from_string_only: bool = False) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    if not isinstance(raw, str):
        raise FieldError("uuid_type", "UUID input should be a string, bytes or UUID object")
    s = raw
    if len(s) >= 2 and s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    elif s.startswith("urn:uuid:"):
        s = s[9:]
    valid = (len(s) == 32 and set(s) <= _HEX) or (
        len(s) == 36 and s[8] == s[13] == s[18] == s[23] == "-" and set(s.replace("-", "")) <= _HEX
        and s.count("-") == 4)
    if not valid:
        text = uuid_error_text(raw)
        raise FieldError("uuid_parsing", f"Input should be a valid UUID, {text}", {"error": text})
    return uuid.UUID(s)


_INT_RE = re.compile(r"^[+-]?\d+(?:_\d+)*(?:\.0*)?$")


def parse_int_string(raw: str) -> int:
    s = raw.strip()
    if not _INT_RE.match(s):
        raise FieldError("int_parsing", "Input should be a valid integer, unable to parse string as an integer")
    return int(s.split(".", 1)[0].replace("_", ""))


# --- fields --------------------------------------------------------------------------------------

class ParsedField:
    """Mixin: `parse(raw, source)` returns the value or raises FieldError."""

    checks: tuple[Check, ...] = ()

    def _init_checks(self, checks: Iterable[Check] | None) -> None:
        self.checks = tuple(checks or ())

    def parse(self, raw: Any, source: str) -> Any:
        if raw is None and getattr(self, "allow_none", False):
            return None
        value = self.convert(raw, source)
        for check in self.checks:
            try:
                check(value)
            except ValueError as exc:
                raise value_error(str(exc)) from None
        return value

    def convert(self, raw: Any, source: str) -> Any:
        raise NotImplementedError


class Str(ParsedField, fields.String):
    def __init__(self, *, min_length: int | None = None, max_length: int | None = None,
                 pattern: str | None = None, strip: bool = False, checks: Iterable[Check] | None = None,
                 **kwargs: Any) -> None:
        limits = {"minLength": min_length, "maxLength": max_length, "pattern": pattern}
        super().__init__(metadata={**{k: v for k, v in limits.items() if v is not None}, **kwargs.pop("metadata", {})},
                         **kwargs)
        self.min_length, self.max_length, self.strip = min_length, max_length, strip
        self.pattern = re.compile(pattern) if pattern else None
        self._init_checks(checks)

    def convert(self, raw: Any, source: str) -> str:
        if not isinstance(raw, str):
            raise FieldError("string_type", "Input should be a valid string")
        if "\x00" in raw:
            # PostgreSQL text cannot hold NUL.
            raise value_error("String must not contain NUL characters")
        value = raw.strip() if self.strip else raw
        if self.min_length is not None and len(value) < self.min_length:
            unit = "character" if self.min_length == 1 else "characters"
            raise FieldError("string_too_short", f"String should have at least {self.min_length} {unit}",
                             {"min_length": self.min_length})
        if self.max_length is not None and len(value) > self.max_length:
            unit = "character" if self.max_length == 1 else "characters"
            raise FieldError("string_too_long", f"String should have at most {self.max_length} {unit}",
                             {"max_length": self.max_length})
        if self.pattern is not None and not self.pattern.search(value):
            raise FieldError("string_pattern_mismatch", f"String should match pattern '{self.pattern.pattern}'",
                             {"pattern": self.pattern.pattern})
        return value


class Int(ParsedField, fields.Integer):
    def __init__(self, *, ge: int | None = None, le: int | None = None,
                 checks: Iterable[Check] | None = None, **kwargs: Any) -> None:
        limits = {"minimum": ge, "maximum": le}
        super().__init__(metadata={**{k: v for k, v in limits.items() if v is not None}, **kwargs.pop("metadata", {})},
                         **kwargs)
        self.ge, self.le = ge, le
        self._init_checks(checks)

    def convert(self, raw: Any, source: str) -> int:
        if isinstance(raw, bool):
            value = int(raw)
        elif isinstance(raw, int):
            value = raw
        elif isinstance(raw, float):
            if not math.isfinite(raw) or raw != int(raw):
                raise FieldError("int_from_float", "Input should be a valid integer, got a number with a fractional part")
            value = int(raw)
        elif isinstance(raw, str):
            value = parse_int_string(raw)
        else:
            raise FieldError("int_type", "Input should be a valid integer")
        if self.ge is not None and value < self.ge:
            raise FieldError("greater_than_equal", f"Input should be greater than or equal to {self.ge}", {"ge": self.ge})
        if self.le is not None and value > self.le:
            raise FieldError("less_than_equal", f"Input should be less than or equal to {self.le}", {"le": self.le})
        return value


class Float(ParsedField, fields.Float):
    def __init__(self, *, checks: Iterable[Check] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_checks(checks)

    def convert(self, raw: Any, source: str) -> float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                raise FieldError("float_parsing", "Input should be a valid number, unable to parse string as a number") from None
        else:
            raise FieldError("float_type", "Input should be a valid number")
        if not math.isfinite(value):
            raise FieldError("finite_number", "Input should be a finite number")
        return value


class Bool(ParsedField, fields.Boolean):
    _TRUE = {"1", "on", "t", "true", "y", "yes"}
    _FALSE = {"0", "off", "f", "false", "n", "no"}

    def convert(self, raw: Any, source: str) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str):
            if raw.strip().lower() in self._TRUE:
                return True
            if raw.strip().lower() in self._FALSE:
                return False
            raise FieldError("bool_parsing", "Input should be a valid boolean, unable to interpret input")
        raise FieldError("bool_type", "Input should be a valid boolean")


class Uuid(ParsedField, fields.UUID):
    def convert(self, raw: Any, source: str) -> uuid.UUID:
        return parse_uuid(raw)


class Enum(ParsedField, fields.String):
    def __init__(self, choices: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(metadata={"enum": list(choices), **kwargs.pop("metadata", {})}, **kwargs)
        self.choices = choices
        quoted = [f"'{c}'" for c in choices]
        self.expected = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]

    def convert(self, raw: Any, source: str) -> str:
        if raw not in self.choices:
            raise FieldError("enum", f"Input should be {self.expected}", {"expected": self.expected})
        return str(raw)


class Dict(ParsedField, fields.Dict):
    def __init__(self, *, checks: Iterable[Check] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_checks(checks)

    def convert(self, raw: Any, source: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise FieldError("dict_type", "Input should be a valid dictionary")
        return raw


class Raw(ParsedField, fields.Raw):
    def convert(self, raw: Any, source: str) -> Any:
        return raw


class List(ParsedField, fields.List):
    def __init__(self, inner: fields.Field, *, checks: Iterable[Check] | None = None, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self._init_checks(checks)

    def convert(self, raw: Any, source: str) -> list[Any]:
        if not isinstance(raw, list):
            raise FieldError("list_type", "Input should be a valid list")
        inner = self.inner
        assert isinstance(inner, ParsedField)
        out = []
        errors: list[FieldError] = []
        for index, item in enumerate(raw):
            try:
                out.append(inner.parse(item, source))
            except FieldError as exc:
                errors.append(FieldError(exc.type, exc.msg, exc.ctx, (index, *exc.loc),
                                         item if exc.input is MISSING else exc.input))
            except FieldErrors as group:
                errors.extend(FieldError(e.type, e.msg, e.ctx, (index, *e.loc), e.input) for e in group.errors)
        if errors:
            raise FieldErrors(errors)
        return out


class FieldErrors(Exception):
    """Several errors from one field (lists, nested objects)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors)
        self.errors = errors


class Nested(ParsedField, fields.Nested):
    def convert(self, raw: Any, source: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise FieldError("dict_type", "Input should be a valid dictionary")
        schema = self.schema
        value, errs = parse_fields(schema, raw, whole=raw, relative=True)
        if errs:
            raise FieldErrors(errs)
        return value


class JsonObject(ParsedField, fields.Raw):
    """An object, or a string holding a JSON object (input_parameters, D14)."""

    def convert(self, raw: Any, source: str) -> dict[str, Any]:
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, str):
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
            if isinstance(value, dict):
                return value
            raise value_error("input_parameters must be a JSON object")
        raise FieldErrors([
            FieldError("dict_type", "Input should be a valid dictionary", loc=("dict[any,any]",)),
            FieldError("string_type", "Input should be a valid string", loc=("str",)),
        ])


# --- schemas ------------------------------------------------------------------------------------

def parse_fields(schema: Schema, data: Mapping[str, Any], whole: Any,
                 relative: bool = False, missing_input: Any = MISSING) -> tuple[dict[str, Any], list[FieldError]]:
    """Parse `data` field by field in declaration order; errors carry loc relative to the source."""
    out: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        key = field.data_key or name
        if key not in data:
            if field.required:
                errors.append(FieldError("missing", "Field required", loc=(key,),
                                         input=whole if missing_input is MISSING else missing_input))
            elif field.load_default is not MISSING:
                default = field.load_default
                out[name] = default() if callable(default) else default
            continue
        raw = data[key]
        if not isinstance(field, ParsedField):
            raise TypeError(f"{type(schema).__name__}.{name} must be a genai_backend.validation field")
        try:
            out[name] = field.parse(raw, "body")
        except FieldError as exc:
            errors.append(FieldError(exc.type, exc.msg, exc.ctx, (key, *exc.loc), raw if exc.input is MISSING else exc.input))
        except FieldErrors as group:
            errors.extend(FieldError(e.type, e.msg, e.ctx, (key, *e.loc), raw if e.input is MISSING else e.input)
                          for e in group.errors)
    if getattr(schema, "forbid_extra", False):
        # pydantic's extra="forbid": one error per unknown key, after the declared fields.
        known = {field.data_key or name for name, field in schema.fields.items()}
        errors.extend(FieldError("extra_forbidden", "Extra inputs are not permitted", loc=(key,), input=value)
                      for key, value in data.items() if key not in known)
    if not errors:
        check = getattr(schema, "check", None)
        if check is not None:
            try:
                check(out)
            except FieldError as exc:
                errors.append(FieldError(exc.type, exc.msg, exc.ctx, exc.loc, whole if exc.input is MISSING else exc.input))
    return out, errors


class RequestSchema(Schema):
    """Base for request schemas: `check(data)` may add a cross-field rule (raise FieldError).

    `forbid_extra = True` on a subclass reports unknown body keys as `extra_forbidden`.
    """

    forbid_extra = False

    def check(self, data: dict[str, Any]) -> None:
        return None


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
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as strict:
        # orjson decides what is acceptable (it refuses lone surrogates and NaN, which PostgreSQL
        # could not store anyway); Python's decoder only supplies the reference's message and position.
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            return MISSING, error("json_invalid", ("body", exc.pos), "JSON decode error", {}, {"error": exc.msg})
        except UnicodeDecodeError:
            pass
        return MISSING, error("json_invalid", ("body", 0), "JSON decode error", {}, {"error": str(strict)})


async def _parse_body(request: web.Request, schema: Schema, location: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    if location == "form":
        form: Mapping[str, Any] = {}
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
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


def handler_schemas(request: web.Request) -> list[Any]:
    handler = request.match_info.handler
    if is_class_based_view(handler):
        handler = getattr(handler, request.method.lower(), None)
    return list(getattr(handler, SCHEMAS_ATTR, None) or ())


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
    return request_schema(schema(), location="match_info", put_into="path")


def query(schema: type[Schema]) -> Callable[[T], T]:
    return request_schema(schema(), location="querystring", put_into="query")


def body(schema: type[Schema]) -> Callable[[T], T]:
    return request_schema(schema(), location="json", put_into="body")


def form(schema: type[Schema]) -> Callable[[T], T]:
    return request_schema(schema(), location="form", put_into="form")
