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


# --- bounds (README §Limits) --------------------------------------------------------------------

def test_int_string_of_thousands_of_digits_is_int_parsing() -> None:
    # int() refuses more than 4300 digits with a ValueError; that must not escape as a 500.
    for raw in ("9" * 5000, "1_" * 5000 + "1"):
        with pytest.raises(FieldError) as info:
            parse_int_string(raw)
        assert info.value.type == "int_parsing"


@pytest.mark.parametrize("text", ["[" * 200_000, '{"a":' * 101 + "1" + "}" * 101, "[" * 101 + "]" * 101])
def test_json_deeper_than_the_bound_is_refused_for_str_and_bytes(text: str) -> None:
    from genai_backend.limits import JsonTooDeep, loads

    for data in (text, text.encode()):
        with pytest.raises(JsonTooDeep) as info:
            loads(data, stdlib_fallback=True)
        assert info.value.pos == 100 or text.startswith("{") and info.value.pos == 500


def test_json_depth_ignores_brackets_inside_strings() -> None:
    from genai_backend.limits import MAX_JSON_DEPTH, loads

    text = '["' + "[" * 500 + '\\"{' + '"]'
    assert loads(text) == ["[" * 500 + '"{']
    assert loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    # What only Python's parser takes (NaN) goes through the fallback, still depth-checked first.
    assert loads("[NaN]", stdlib_fallback=True) != [0]
    with pytest.raises(ValueError):
        loads("[NaN]")


@pytest.mark.parametrize("value, problem", [
    ({"a": ["x\x00"]}, "NUL"), ({"k\x00": 1}, "NUL"), (["\ud800"], "surrogate"), ([[[]]], None), ("ok", None),
])
def test_unstorable_values(value: object, problem: str | None) -> None:
    from genai_backend.limits import unstorable

    found = unstorable(value)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_unstorable_depth_is_checked_without_recursion() -> None:
    from genai_backend.limits import MAX_JSON_DEPTH, unstorable

    deep: object = []
    for _ in range(100_000):
        deep = [deep]
    assert unstorable(deep) == f"nested deeper than {MAX_JSON_DEPTH} levels"


def test_strings_have_a_default_maximum_length() -> None:
    from genai_backend.limits import MAX_TEXT_LENGTH
    from genai_backend.validation import Str

    field = Str()
    assert field.parse("x" * MAX_TEXT_LENGTH, "body")
    with pytest.raises(FieldError) as info:
        field.parse("x" * (MAX_TEXT_LENGTH + 1), "body")
    assert info.value.type == "string_too_long" and info.value.ctx == {"max_length": MAX_TEXT_LENGTH}
