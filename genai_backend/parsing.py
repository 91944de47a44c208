"""pydantic-core's error shapes and texts, reproduced: FieldError, and the UUID and integer parsers (errors.md §2)."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

from marshmallow.utils import missing as MISSING


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


def parse_uuid(raw: Any) -> uuid.UUID:
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
    if _INT_RE.match(s):
        try:
            return int(s.split(".", 1)[0].replace("_", ""))
        except ValueError:
            pass  # over CPython's 4300-digit limit for int(str): no integer anyone meant
    raise FieldError("int_parsing", "Input should be a valid integer, unable to parse string as an integer")


class FieldErrors(Exception):
    """Several errors from one field (lists, nested objects)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors)
        self.errors = errors
