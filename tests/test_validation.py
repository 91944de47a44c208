"""The pydantic-compatible parsers behind every 422 (errors.md §2.3, §2.4)."""
from __future__ import annotations

import uuid

import pytest

from genai_backend.validation import FieldError, parse_int_string, parse_uuid, uuid_error_text

U = "123e4567-e89b-12d3-a456-426614174000"
CHAR = "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `{}` at {}"


@pytest.mark.parametrize("raw, text", [
    ("None", CHAR.format("N", 1)),
    ("abc", "invalid length: expected length 32 for simple format, found 3"),
    ("", "invalid length: expected length 32 for simple format, found 0"),
    (U[:-1], "invalid group length in group 4: expected 12, found 11"),
    (U + "0", "invalid group length in group 4: expected 12, found 13"),
    ("123e4567-e89b-12d3-a456", "invalid group count: expected 5, found 4"),
    (U[:-1] + "g", CHAR.format("g", 36)),
    (U + " ", CHAR.format(" ", 37)),
    ("123e4567e-89b-12d3-a456-426614174000", "invalid group length in group 0: expected 8, found 9"),
    ("{" + U[:-1] + "}", "invalid group length in group 4: expected 12, found 11"),
])
def test_uuid_error_texts(raw: str, text: str) -> None:
    assert uuid_error_text(raw) == text
    with pytest.raises(FieldError) as info:
        parse_uuid(raw)
    assert info.value.type == "uuid_parsing"
    assert info.value.msg == f"Input should be a valid UUID, {text}"
    assert info.value.ctx == {"error": text}


@pytest.mark.parametrize("raw", [U, U.upper(), U.replace("-", ""), "{" + U + "}", "urn:uuid:" + U])
def test_uuid_accepted_forms_normalise(raw: str) -> None:
    assert parse_uuid(raw) == uuid.UUID(U)


def test_uuid_non_string_is_uuid_type() -> None:
    with pytest.raises(FieldError) as info:
        parse_uuid(5)
    assert info.value.type == "uuid_type"


@pytest.mark.parametrize("raw, value", [("0", 0), (" 12 ", 12), ("-3", -3), ("+4", 4), ("1_000", 1000), ("1.0", 1), ("7.00", 7)])
def test_int_strings_accepted(raw: str, value: int) -> None:
    assert parse_int_string(raw) == value


@pytest.mark.parametrize("raw", ["", "0.1", "1.5", "zero", "1e3", "0x10", "1__0", "_1", "--1"])
def test_int_strings_rejected(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_int_string(raw)
    assert info.value.type == "int_parsing"
    assert info.value.msg == "Input should be a valid integer, unable to parse string as an integer"
