"""Request fields that parse like pydantic and fail with its errors; schemas walk them in declaration order.

Schemas are ordinary marshmallow schemas, so aiohttp-apigami documents them; the fields are the
subclasses below, each knowing how to parse a raw value and which pydantic error it produces.
"""
from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from marshmallow import Schema, fields
from marshmallow.utils import missing as MISSING

from genai_backend.limits import MAX_PAGE_SIZE, MAX_TEXT_LENGTH, loads
from genai_backend.parsing import FieldError, FieldErrors, parse_int_string, parse_uuid, value_error

Check = Callable[[Any], None]


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
    def __init__(self, *, min_length: int | None = None, max_length: int | None = MAX_TEXT_LENGTH,
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


def page_size(description: str = "page size") -> Int:
    """A `limit`-like query parameter: 0 to MAX_PAGE_SIZE, default 100 (README §Limits)."""
    return Int(ge=0, le=MAX_PAGE_SIZE, load_default=100,
               metadata={"description": f"{description}, at most {MAX_PAGE_SIZE} (above: 422)"})


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
                value = loads(raw, stdlib_fallback=True)
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
